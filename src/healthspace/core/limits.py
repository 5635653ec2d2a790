"""Disclosure limits every role shares: the minimum cell size and its floor."""

MIN_CELL_FLOOR = 5  # no policy, node or task may release a count below this
DEFAULT_MIN_CELL = 10
