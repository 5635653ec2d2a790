"""benchmarks/load.py: the default workload and the options that change it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from load import parse_args  # noqa: E402


def test_the_default_workload_is_the_documented_one() -> None:
    _, config = parse_args([])
    assert (config.nodes, config.consumers, config.studies, config.targets) == (100, 50, 3, 10)
    assert config.think_s == 30.0
    assert config.pin_hub == (len(os.sched_getaffinity(0)) >= 2)  # the hub gets a core
    assert config.db is None and config.synchronous == "full"


def test_options_change_it_and_bad_ones_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    _, config = parse_args(["--think", "5", "--no-pin-hub", "--studies", "1"])
    assert (config.think_s, config.pin_hub, config.studies) == (5.0, False, 1)
    assert parse_args(["--pin-hub"])[1].pin_hub is True
    with pytest.raises(SystemExit):
        parse_args(["--targets", "101"])
    assert "--targets must be between 0 and --nodes" in capsys.readouterr().err
