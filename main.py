"""Entry point: `python main.py --help`. The same command is installed as `emotion`."""

import sys

try:
    from emotion.cli import main
except KeyboardInterrupt:  # Ctrl-C before the command line could install its own handling
    print("interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
