"""Command-line options declared on frozen config dataclasses: one source of flags, defaults and validation.

A field takes part when its metadata holds a Flag (see `option`). `add_options` turns such fields into argparse
options whose default comes from the dataclass (None in the namespace means "not given", so each config applies its
own default), and `from_namespace` builds the config back from the parsed options. A flag several configs share, or
one the parser already declares by hand, is added once and read by all. Validation stays in `__post_init__`: a
ConfigError there names fields, and `from_namespace` reports it with their flags instead. A `tuple[str, ...]` field
takes a comma-separated list and may be repeated (`--show pose,gaze`, `--show pose --show gaze`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass
from typing import Any

FLAG = "flag"
"""Metadata key of a field's Flag."""


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line."""

    help: str  # what the option does; '(default: ...)' is added from the field's default
    name: str | None = None  # option string when not --<field-name> (--no-<field-name> for a bool that defaults True)
    metavar: str | None = None  # placeholder of the value in --help
    choices: tuple[Any, ...] | None = None  # the values allowed
    const: Any = None  # value when the option is given without one; the value is then optional
    default_text: str | None = None  # what --help says the default is, when the field's default alone does not


def option(help: str, default: Any = MISSING, **flag: Any) -> Any:
    """A dataclass field with a command-line option: `lr: float = option("peak learning rate", 3e-4, metavar="X")`."""
    return dataclasses.field(default=default, metadata={FLAG: Flag(help, **flag)})


class ConfigError(ValueError):
    """A setting out of range, worded with placeholders for the fields it names, so a command line can put its flags
    there: ConfigError("{} must be 1 or more", "batch_size")."""

    def __init__(self, template: str, *names: str) -> None:
        self.template, self.names = template, names
        super().__init__(self.text())

    def text(self, name: Callable[[str], str] = str) -> str:
        """The message with each field written as name(field)."""
        return self.template.format(*map(name, self.names))


def check_min(config: Any, minimum: int, *names: str) -> None:
    """Raise ConfigError for the first of the named fields below minimum (None passes: not set)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{{}} must be {minimum} or more, got {value}", name)


def flagged(cls: type) -> list[Field]:
    """The fields of a config dataclass that have a command-line option, in declaration order."""
    return [f for f in dataclasses.fields(cls) if FLAG in f.metadata]


def option_name(f: Field) -> str:
    """The field's option string: Flag.name, else --<field-name>, or --no-<field-name> for a bool defaulting True."""
    flag: Flag = f.metadata[FLAG]
    if flag.name:
        return flag.name
    return ("--no-" if _negated(f) else "--") + f.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *classes: type) -> None:
    """Add an option for every flagged field of the classes; one the parser already has is left as it is."""
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in flagged(cls):
            try:
                parser.add_argument(option_name(f), **_argparse_kwargs(f, hints[f.name]))
            except argparse.ArgumentError:
                continue  # declared already (by an earlier class, or by hand): the field reads that option


def from_namespace(cls: type, namespace: argparse.Namespace, **values: Any) -> Any:
    """The config of the parsed options (a field whose option was not given keeps its default), plus `values`.

    Raises ValueError naming the flags when the config refuses a setting (ConfigError).
    """
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in flagged(cls):
        value = getattr(namespace, _dest(f), None)
        if value is not None and _is_list(hints[f.name]):
            value = tuple(dict.fromkeys(item for items in value for item in items))  # each once, in order
        if value is not None:
            kwargs[f.name] = not value if _negated(f) else value
    kwargs.update(values)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        flags = {f.name: option_name(f) for f in flagged(cls)}
        raise ValueError(exc.text(lambda name: flags.get(name, name))) from None


def _negated(f: Field) -> bool:
    """A bool field defaulting True is switched off by its flag (--no-<name>)."""
    return f.default is True


def _dest(f: Field) -> str:
    return option_name(f).lstrip("-").replace("-", "_")


def _argparse_kwargs(f: Field, hint: Any) -> dict[str, Any]:
    """add_argument's keywords for a field: store_true for a bool, else the value's type; default None (not given)."""
    flag: Flag = f.metadata[FLAG]
    kwargs: dict[str, Any] = {"default": None, "help": _help(f, flag)}
    if _scalar(hint) is bool:
        kwargs["action"] = "store_true"
        return kwargs
    if _is_list(hint):
        kwargs.update(action="append", type=_items(flag.choices), metavar=flag.metavar)
        return kwargs
    kwargs.update(type=_scalar(hint), metavar=flag.metavar, choices=flag.choices)
    if flag.const is not None:
        kwargs.update(nargs="?", const=flag.const)
    return kwargs


def _is_list(hint: Any) -> bool:
    """A `tuple[str, ...]` field: a list of names on the command line."""
    return typing.get_origin(hint) is tuple


def _items(choices: tuple[Any, ...] | None) -> Callable[[str], tuple[str, ...]]:
    """argparse's type for one value of a list option: its comma-separated names, each one of `choices`."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        wrong = [item for item in items if choices and item not in choices]
        if wrong or not items:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {', '.join(wrong) or repr(text)} (choose from {', '.join(map(str, choices or ()))})"
            )
        return items

    return parse


def _scalar(hint: Any) -> type:
    """int for `int` or `int | None`, and so on."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _help(f: Field, flag: Flag) -> str:
    """The help text with the default the dataclass gives (floats as %g), or the Flag's default_text."""
    text = flag.default_text
    if text is None and f.default not in (MISSING, None) and not isinstance(f.default, bool):
        text = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    return f"{flag.help} (default: {text})" if text is not None else flag.help
