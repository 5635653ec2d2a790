"""Fixtures for hub tests: a fresh hub, and a small populated data space.

Both are built once per session as templates and copied per test (file copy, new app).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hubkit import Hub, Space, copy_hub, copy_space, make_hub, make_space
from hubkit import cluster as pg_cluster_of_this_process


@pytest.fixture(scope="session")
def hub_template(tmp_path_factory: pytest.TempPathFactory) -> Hub:
    return make_hub(tmp_path_factory.mktemp("hub_template"))


@pytest.fixture(scope="session")
def space_template(tmp_path_factory: pytest.TempPathFactory) -> Space:
    return make_space(make_hub(tmp_path_factory.mktemp("space_template")))


@pytest.fixture
def hub(hub_template: Hub, tmp_path: Path) -> Iterator[Hub]:
    hub = copy_hub(hub_template, tmp_path)
    yield hub
    hub.close()


@pytest.fixture
def space(space_template: Space, tmp_path: Path) -> Iterator[Space]:
    space = copy_space(space_template, tmp_path)
    yield space
    space.hub.close()


@pytest.fixture(scope="session")
def pg_cluster() -> object:
    """The test process's throw-away PostgreSQL cluster on 127.0.0.1 (tests/pgcluster.py),
    the one hubkit's PostgreSQL hubs live in; stopped when the process ends."""
    return pg_cluster_of_this_process()
