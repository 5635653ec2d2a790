"""``healthspace registry`` files (errors named before anything is sent) and ``healthspace node
registry refresh|list`` on a real store, offline from the definitions the agent keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import state_path
from healthspace.cli.main import run
from healthspace.cli.registry import load_registry_file
from healthspace.core.errors import InvalidInput
from healthspace.core.registry_defs import RegistryView
from healthspace.node import registries
from healthspace.node.state import NodeState

EXAMPLES = Path(__file__).resolve().parents[3] / "src" / "healthspace" / "examples" / "registries"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_registry_file_may_point_to_its_cohort_and_dataset(tmp_path: Path) -> None:
    inline = yaml.safe_load((EXAMPLES / "lung_cancer_lines.yaml").read_text())
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(inline.pop("cohort")))
    (tmp_path / "dataset.json").write_text(json.dumps(inline.pop("dataset")))
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(
        {**inline, "cohort_path": "cohort.yaml", "dataset_path": "dataset.json"}))
    assert load_registry_file(tmp_path / "registry.yaml") == load_registry_file(
        EXAMPLES / "lung_cancer_lines.yaml")
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(
        {**inline, "cohort": {"entry": {}}, "cohort_path": "cohort.yaml"}))
    with pytest.raises(InvalidInput) as raised:
        load_registry_file(tmp_path / "both.yaml")
    assert raised.value.field == "cohort_path"


@pytest.mark.parametrize(("text", "field"), [
    ("name: [", "registry"),
    ("- a list", "registry"),
    ("name: x\ntitle: t\ncohort: {entry: {drug: {codes: [A10]}}}\ndataset: {}\n",
     "cohort.entry.drug.codes"),
    ("name: x\ntitle: t\ncohort: {entry: {drug: {codes: ['ATC:A10']}}}\n", "dataset"),
])
def test_a_malformed_registry_file_is_refused_before_anything_is_sent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert run(["registry", "create", str(path), "--hub", "http://127.0.0.1:9",
                "--token", "hs_x"]) == 2
    assert f"{field}:" in capsys.readouterr().err


def test_node_registry_refresh_offline_then_list(synth_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "h3.duckdb"
    ingest_dir(store, synth_dir / "hospital_3")
    NodeState.init(state_path(store))
    assert run(["node", "registry", "refresh", "--store", str(store), "--offline"]) == 2
    assert "takes part in no registry yet" in capsys.readouterr().err
    raw = load_registry_file(EXAMPLES / "lung_cancer_lines.yaml")
    view = RegistryView(name=raw.name, title=raw.title, cohort=raw.cohort, dataset=raw.dataset,
                        refresh=raw.refresh, version=1, digest=raw.digest(), created_at=NOW,
                        created_by="operator", first_registered_at=NOW, participants=["h3"])
    registries.save_definitions(registries.registries_dir(store), [view])
    assert run(["node", "registry", "refresh", "--store", str(store), "--offline",
                "--name", "nothing"]) == 2
    assert "name:" in capsys.readouterr().err
    assert run(["node", "registry", "refresh", "--store", str(store), "--offline"]) == 0
    assert "registry lung_cancer_lines v1:" in capsys.readouterr().out
    assert run(["node", "registry", "list", "--store", str(store), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    con = duckdb.connect(str(store), read_only=True)
    cancers = con.execute("SELECT COUNT(DISTINCT person_id) FROM condition_occurrence "
                          "WHERE condition_source_value LIKE 'C34%'").fetchone()
    con.close()
    assert cancers is not None and 0 < listed["persons"] <= cancers[0]
    assert listed["name"] == "lung_cancer_lines" and listed["fresh"] is True
    assert Path(listed["file"]).parent == tmp_path / "h3.registries"
