"""Statistical disclosure control: small-cell suppression with complementary suppression.

A count below the minimum cell size ``k`` is released as the string ``"<k"``, never the
number. Tables released next to a known total get complementary suppression, so no
suppressed cell can be derived by subtraction.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

from healthspace.core.limits import MIN_CELL_FLOOR

K = TypeVar("K", bound=Hashable)

Released = int | str



def suppressed_label(k: int) -> str:
    return f"<{k}"


def check_k(k: int) -> int:
    if k < MIN_CELL_FLOOR:
        raise ValueError(f"minimum cell size {k} is below the floor of {MIN_CELL_FLOOR}")
    return k


def release_count(n: int, k: int) -> Released:
    """The number itself when ``n >= k``, otherwise ``"<k"``."""
    check_k(k)
    return int(n) if n >= k else suppressed_label(k)


def is_suppressed(value: Released) -> bool:
    return isinstance(value, str)


def release_table(cells: Mapping[K, int], k: int) -> dict[K, Released]:
    """Release a table whose cells sum to a total that is itself released.

    Primary suppression hides every cell below ``k``. Complementary suppression then hides the
    next-smallest released cells until either nothing is suppressed, or at least two cells are
    suppressed and their derivable sum (total minus released cells) is 0 or at least ``k`` —
    so subtraction from the total never pins down a suppressed cell or a small group.
    """
    check_k(k)
    hidden = {key for key, n in cells.items() if n < k}

    def hidden_sum() -> int:
        return sum(cells[key] for key in hidden)

    while hidden and (len(hidden) == 1 or 0 < hidden_sum() < k):
        candidates = [key for key in cells if key not in hidden]
        if not candidates:
            break
        hidden.add(min(candidates, key=lambda key: cells[key]))
    return {key: (suppressed_label(k) if key in hidden else int(n)) for key, n in cells.items()}
