"""Entry point: `python main.py --help`. The same command is installed as `emotion`."""

import sys

from emotion.cli import main

if __name__ == "__main__":
    sys.exit(main())
