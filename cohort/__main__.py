"""``python -m cohort``: the same command as the ``cohort`` console script."""

import sys

from cohort import main

if __name__ == "__main__":
    sys.exit(main())
