"""Small-cell suppression and complementary suppression."""

import itertools

import numpy as np
import pytest

from healthspace.privacy.disclosure import release_count, release_table


def test_release_count_threshold_is_inclusive():
    assert release_count(10, 10) == 10
    assert release_count(9, 10) == "<10"
    assert release_count(0, 10) == "<10"
    assert release_count(11, 11) == 11
    assert release_count(10, 11) == "<11"


def test_floor_of_five_is_enforced():
    with pytest.raises(ValueError, match="floor"):
        release_count(3, 4)
    assert release_count(5, 5) == 5


def test_table_without_small_cells_is_released_whole():
    cells = {"a": 12, "b": 40, "c": 10}
    assert release_table(cells, 10) == cells


def test_single_small_cell_gets_a_complementary_partner():
    released = release_table({"a": 3, "b": 50, "c": 12, "d": 30}, 10)
    hidden = [k for k, v in released.items() if isinstance(v, str)]
    assert "a" in hidden and len(hidden) >= 2
    assert released["c"] == "<10"  # the next-smallest cell is the partner


def _derivable(cells, released, total):
    """What an attacker learns: the sum of hidden cells, from the released total."""
    shown = sum(v for v in released.values() if isinstance(v, int))
    return total - shown


@pytest.mark.parametrize("seed", range(200))
def test_no_hidden_cell_or_small_group_is_derivable(seed):
    rng = np.random.default_rng(seed)
    n_cells = int(rng.integers(2, 12))
    cells = {i: int(x) for i, x in enumerate(rng.poisson(rng.uniform(1, 30), n_cells))}
    k = int(rng.integers(5, 15))
    released = release_table(cells, k)
    hidden = [key for key, v in released.items() if isinstance(v, str)]
    for key, value in released.items():
        if isinstance(value, int):
            assert value == cells[key] and value >= k
        else:
            assert value == f"<{k}"
    if hidden:
        assert len(hidden) >= 2 or len(hidden) == len(cells)
        derived = _derivable(cells, released, sum(cells.values()))
        assert derived == 0 or derived >= k or len(hidden) == len(cells)


def test_all_cells_small_hides_everything():
    released = release_table({"a": 1, "b": 2, "c": 3}, 10)
    assert set(released.values()) == {"<10"}


def test_exhaustive_small_tables_never_leak_a_single_hidden_cell():
    for values in itertools.product([0, 1, 4, 9, 10, 25], repeat=3):
        cells = dict(zip("abc", values, strict=True))
        released = release_table(cells, 10)
        hidden = [k for k, v in released.items() if isinstance(v, str)]
        assert len(hidden) != 1
