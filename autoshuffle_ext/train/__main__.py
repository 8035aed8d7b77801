"""`python -m autoshuffle_ext.train`: the same program as `autoshuffle-train`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
