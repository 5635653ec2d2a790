"""Helpers shared by the analyses' tests run with and without secure aggregation."""

from __future__ import annotations

from typing import Any


def check_sites(result: dict[str, Any], key: str, expected: dict[str, int],
                secure: bool) -> None:
    """Per-site values are released in clear; under secure aggregation they are withheld
    and only their network total is released."""
    if secure:
        assert result[key] == dict.fromkeys(expected)
        total = result["nobs"] if key == "sites" else result["coarsened_total"]
        assert total == sum(expected.values())
    else:
        assert result[key] == expected
