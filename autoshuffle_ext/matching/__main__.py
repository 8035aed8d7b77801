"""`python -m autoshuffle_ext.matching`: the same as `autoshuffle-graphmatch`."""

from .cli import main

raise SystemExit(main())
