"""Fixtures for operations tests: the hub test kit's populated space (copied per test),
a space with a finished study history, and a small node (store + state with a ledger)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from hubkit import Space, copy_space, make_hub, make_space  # noqa: E402
from opskit import run_history  # noqa: E402


@pytest.fixture(scope="session")
def space_template(tmp_path_factory: pytest.TempPathFactory) -> Space:
    return make_space(make_hub(tmp_path_factory.mktemp("ops_bare")))


@pytest.fixture
def space(space_template: Space, tmp_path: Path) -> Iterator[Space]:
    """A private copy of the populated space with no studies yet."""
    folder = tmp_path / "space"
    folder.mkdir()
    space = copy_space(space_template, folder)
    yield space
    space.hub.close()


@pytest.fixture(scope="session")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Space, dict[str, int]]:
    space = make_space(make_hub(tmp_path_factory.mktemp("ops_space")))
    return space, run_history(space)


@pytest.fixture
def history(history_template: tuple[Space, dict[str, int]],
            tmp_path: Path) -> Iterator[tuple[Space, dict[str, int]]]:
    """A private copy of a hub with a study history, and the ids of its studies."""
    template, ids = history_template
    folder = tmp_path / "live"
    folder.mkdir()
    space = copy_space(template, folder)
    yield space, ids
    space.hub.close()


@pytest.fixture(scope="session")
def node_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node store from a small synthetic hospital, and its state with a signed ledger."""
    from healthspace.cdm.ingest import ingest_dir
    from healthspace.cdm.store import state_path
    from healthspace.cdm.synth import generate
    from healthspace.node import audit
    from healthspace.node.state import NodeState

    root = tmp_path_factory.mktemp("ops_node")
    generate(root / "synth", sites=1, persons=300, seed=3)
    store = root / "node" / "hosp.duckdb"
    ingest_dir(store, root / "synth" / "hospital_1")
    state = NodeState.init(state_path(store), name="node-a")
    for task in range(1, 6):
        audit.record(state, "task.run", audit.task_subject(task, 1, task), {"records": task})
    return store


@pytest.fixture
def node_store(node_template: Path, tmp_path: Path) -> Path:
    """A private copy of the node (store and state file)."""
    import shutil

    from healthspace.cdm.store import state_path

    target = tmp_path / "node" / node_template.name
    target.parent.mkdir()
    shutil.copyfile(node_template, target)
    shutil.copyfile(state_path(node_template), state_path(target))
    return target
