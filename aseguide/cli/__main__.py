"""``python -m aseguide.cli``: the command line (see :mod:`aseguide.cli`)."""

import sys

from aseguide.cli import main

if __name__ == "__main__":
    sys.exit(main())
