"""The one exception of the package: a problem with the user's input or settings, reported without a traceback."""

from __future__ import annotations


class EmotionError(Exception):
    """A problem with the user's input or settings, reported as one line without a traceback.

    `fix` says how to mend it in Python terms; `cli_fix`, when given, says it in command-line terms (a flag), and the
    command line shows that instead. `str(error)` is the problem and the library's fix.
    """

    def __init__(self, problem: str, fix: str | None = None, cli_fix: str | None = None):
        self.problem, self.fix, self.cli_fix = problem, fix, cli_fix
        super().__init__(f"{problem} ({fix})" if fix else problem)

    def cli_message(self) -> str:
        """The one line the command line prints after 'error: '."""
        fix = self.cli_fix or self.fix
        return f"{self.problem} ({fix})" if fix else self.problem
