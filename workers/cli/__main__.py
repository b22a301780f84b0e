"""`python -m workers.cli`: the `cityrelay` command without the installed script."""

import sys

from workers.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
