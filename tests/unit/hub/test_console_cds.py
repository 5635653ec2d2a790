"""The console's "Similar patients" page in process: the form submits exactly the study
``healthspace cds lookup`` submits, bad input comes back as the form with the field named
(never a 500), role and CSRF refusals, Chinese; and the lookup's result on the study page
(tables, the Kaplan–Meier figure, the CSV)."""

from __future__ import annotations

import copy
import html
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hubkit import Space
from test_console import _csrf, sign_in
from test_console_builder import _field_error
from test_console_study import (
    check_svg_of,
    needs_cjk,
    page_of,
    parse_csv,
    post_metered,
    svg_texts,
    tables,
)

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis, Final, LocalContext, Params
from healthspace.analyses.similar_params import SimilarParams
from healthspace.client.lookup import lookup_spec
from healthspace.hub.console import cds_form, charts
from healthspace.hub.console.i18n import Translator

PAGE = "/console/similar-patients"
EXAMPLE = Path(str(resources.files("healthspace.examples").joinpath("cds_profile_t2d.json")))
KM = {"timeline": [0.0, 60.0, 200.0, 400.0], "survival": [1.0, 0.95, 0.9, 0.8],
      "ci_lower": [1.0, 0.9, 0.83, 0.7], "ci_upper": [1.0, 0.99, 0.95, 0.88],
      "at_risk": [200, 180, 150, 90], "median": None}
RESULT: dict[str, Any] = {  # the lookup's result shape (docs/similar-patients.md)
    "k": 200, "min_cell_size": 10, "matched": 200,
    "nodes": {"node-a": {"candidates": 1105, "matched": 200}},
    "standardisation": {"age": {"mean": 61.2, "sd": 12.1, "n": 1105}},
    "features_dropped": ["LOINC:33914-3"],
    "similarity": {"edges": [0, 0.5, 1, None], "counts": [60, 110, 30],
                   "suppressed_cells": 1, "mean": 0.71, "sd": 0.4},
    "km_outcome": "ckd",
    "groups": [
        {"name": "insulin", "kind": "treatment", "treated": 44, "share": 0.22,
         "outcomes": {"ckd": {"events": 12, "rate": 0.2727},
                      "death": {"events": "<10", "rate": None, "rate_range": [0.0, 0.2]}},
         "km": {**KM, "median": 380.0}, "nodes_suppressed": []},
        {"name": "sulfonylurea", "kind": "treatment", "treated": "<10", "share": None,
         "outcomes": {"ckd": {"events": "<10", "rate": None},
                      "death": {"events": "<10", "rate": None}},
         "km": None, "nodes_suppressed": ["node-a"]},
        {"name": "none of the candidates", "kind": "none", "treated": 150, "share": 0.75,
         "outcomes": {"ckd": {"events": 45, "rate": 0.3}, "death": {"events": 11,
                                                                   "rate": 0.0733}},
         "km": KM, "nodes_suppressed": []},
        {"name": "all matched", "kind": "all", "treated": 200, "share": 1.0,
         "outcomes": {"ckd": {"events": 60, "rate": 0.3}, "death": {"events": 14,
                                                                   "rate": 0.07}},
         "km": KM, "nodes_suppressed": []},
    ],
}


class StandIn(Analysis):
    """``similar_patients`` for these tests: its parameters, and a result as the node sent."""

    name = "similar_patients"
    params_model = SimilarParams

    def local(self, ctx: LocalContext, params: Params, round_input: Any) -> dict[str, Any]:
        raise AssertionError("the test plays the node")

    def combine(self, partials: Any, params: Params, state: dict[str, Any],
                round: int) -> Final:
        return Final(result=dict(next(iter(partials.values()))))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalogue's similar_patients, or the stand-in while it has none."""
    if "similar_patients" not in registry.names():
        monkeypatch.setitem(registry._REGISTRY, "similar_patients", StandIn())


def released(space: Space, monkeypatch: pytest.MonkeyPatch, result: dict[str, Any]) -> int:
    """A lookup on node-a whose result is ``result`` (the stand-in releases what node-a
    sends); its study id."""
    registry.names()  # the built-ins first: the stand-in replaces one only for this test
    monkeypatch.setitem(registry._REGISTRY, "similar_patients", StandIn())
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "allowed_purposes": ["clinical_care"]})
    spec = lookup_spec(EXAMPLE, nodes=["node-a"])
    study = hub.submit(space.alice, **spec.model_dump(mode="json"))
    post_metered(hub, "node-a", space.node_a, copy.deepcopy(result), persons=1105)
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    return int(study["id"])


@pytest.fixture
def answered(space: Space, monkeypatch: pytest.MonkeyPatch) -> tuple[Space, int]:
    """A lookup on node-a whose result is :data:`RESULT`."""
    return space, released(space, monkeypatch, RESULT)


@pytest.fixture(scope="module")
def synthetic_result(synth_dir: Path) -> dict[str, Any]:
    """The worked example run by the real analysis over the synthetic hospitals (in
    simulation, each site's policy allowing clinical care)."""
    from healthspace.governance.policy import Level, Purpose, UsagePolicy
    from healthspace.sim import load_site, simulate

    spec = lookup_spec(EXAMPLE)
    sites = {f"hospital_{i}": load_site(synth_dir / f"hospital_{i}") for i in (1, 2, 3)}
    try:
        for site in sites.values():
            site.policy = UsagePolicy(level=Level.L1, allowed_purposes=[Purpose.CLINICAL_CARE])
        return simulate(spec.analysis, sites, params=spec.params, cohort=spec.cohort,
                        purpose=spec.purpose)
    finally:
        for site in sites.values():
            site.con.close()


def _post(client: Any, fields: dict[str, Any]) -> Any:
    csrf = _csrf(client.get(PAGE).text)
    return client.post(PAGE, data={"csrf": csrf, **fields}, follow_redirects=False)


def _example_fields() -> dict[str, Any]:
    values, ticked, chosen = cds_form.values_from(cds_form.example())
    return {**values, "presets": ticked, "nodes": chosen}


def _studies(space: Space) -> list[dict[str, Any]]:
    return list(space.hub.ok("GET", "/studies", space.hub.operator)["studies"])


def test_the_page_is_for_consumers_and_operators(space: Space) -> None:
    client = sign_in(space, space.alice)
    page = client.get(PAGE)
    assert page.status_code == 200 and 'data-testid="cds-form"' in page.text
    assert f'href="{PAGE}" aria-current="page"' in page.text  # in the navigation
    assert 'name="presets" value="insulin"' in page.text and "ATC:A10AB%" in page.text
    assert 'value="death@365"' not in page.text and "death@365</textarea>" in page.text
    assert 'name="nodes" value="node-a"' in page.text
    assert sign_in(space, space.admin_a).get(PAGE).status_code == 403
    space.hub.client.cookies.clear()
    assert space.hub.client.get(PAGE, follow_redirects=False).status_code == 303


def test_the_worked_example_fills_the_form(space: Space) -> None:
    page = sign_in(space, space.alice).get(PAGE, params={"example": "1"})
    text = html.unescape(page.text)
    assert "Filled in with the worked example" in text
    assert 'name="age" value="62"' in text and '<option value="M" selected>' in text
    assert "LOINC:4548-4=8.4\nLOINC:33914-3=55</textarea>" in text
    assert "insulin=ATC:A10AB%@180\nsulfonylurea=ATC:A10BB%@180</textarea>" in text
    assert "ckd=ICD10:N18%,ICD10:E11.21,ICD10:E11.22@365\ndeath@730</textarea>" in text
    assert 'name="index" value="ICD10:E11%"' in text


def test_the_form_submits_the_study_the_cli_submits(space: Space, registered: None) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, _example_fields())
    assert done.status_code == 303, done.text[:3000]
    study_id = int(done.headers["location"].rsplit("/", 1)[1])
    assert done.headers["location"] == f"/console/studies/{study_id}"
    from_cli = space.hub.submit(space.alice, **lookup_spec(EXAMPLE).model_dump(mode="json"))
    stored = space.hub.study(space.alice, study_id)
    for key in ("analysis", "purpose", "params", "cohort", "title", "nodes"):
        assert stored[key] == from_cli[key], key
    assert (stored["analysis"], stored["purpose"]) == ("similar_patients", "clinical_care")
    assert client.get(done.headers["location"]).status_code == 200


def test_presets_nodes_and_defaults(space: Space, registered: None) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, {"age": "70", "sex": "F", "conditions": "ICD10:I50.0, ICD10:I10",
                          "labs": "", "drugs": "ATC:C03CA01", "presets": ["loop_diuretic",
                                                                          "warfarin"],
                          "treatments": "", "outcomes": "", "k": "", "index": "",
                          "nodes": ["node-b"]})
    assert done.status_code == 303, done.text[:3000]
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/", 1)[1]))
    assert stored["nodes"] == ["node-b"]
    assert stored["cohort"]["entry"] == {"condition": {"codes": ["ICD10:I50%"]}}
    assert [t["name"] for t in stored["params"]["treatments"]] == ["loop_diuretic", "warfarin"]
    assert [(o["name"], o["death"], o["horizon_days"]) for o in stored["params"]["outcomes"]] \
        == [("death", True, 365)]
    assert stored["params"]["profile"]["sex"] == "F"


@pytest.mark.parametrize(("fields", "key", "words"), [
    ({"age": ""}, "age", "Give the age"),
    ({"age": "200"}, "age", "130"),
    ({"labs": "LOINC:4548-4 8.4"}, "labs", "Line 1: write CODE=VALUE"),
    ({"labs": "LOINC:4548-4=8.4\nLOINC:33914-3=low"}, "labs", "Line 2"),
    ({"conditions": "E11.9"}, "conditions", "VOCAB:CODE"),
    ({"drugs": "ATC:A10%"}, "drugs", "wildcard"),
    ({"presets": ["magic"]}, "presets", "Unknown treatment: magic"),
    ({"treatments": "basal"}, "treatments", "names no codes"),
    ({"treatments": "insulin=ATC:A10AE%", "presets": ["insulin"]}, "treatments",
     "must not repeat"),
    ({"outcomes": "ckd@365"}, "outcomes", "needs codes"),
    ({"k": "many"}, "k", "whole number"),
    ({"k": "5"}, "k", "greater than or equal to 10"),
    ({"index": "E11"}, "index", "VOCAB:CODE"),
    ({"conditions": "", "index": ""}, "index", "no condition"),
    ({"km_outcome": "stroke"}, "km_outcome", "not one of the outcomes"),
    ({"nodes": ["nowhere"]}, "nodes", "unknown node 'nowhere'"),
])
def test_bad_input_comes_back_with_the_field_named(space: Space, registered: None,
                                                   fields: dict[str, Any], key: str,
                                                   words: str) -> None:
    client = sign_in(space, space.alice)
    before = len(_studies(space))
    page = _post(client, {**_example_fields(), **fields})
    assert page.status_code == 422, page.text[:2000]
    assert words in _field_error(page.text, key)
    summary = html.unescape(page.text)
    assert f'href="#f-{key}">{cds_form.LABELS[key]}</a>' in summary
    assert 'data-testid="cds-form"' in page.text  # the form again, with what was typed
    assert "LOINC:33914-3=" in html.unescape(page.text)
    assert len(_studies(space)) == before


def test_a_forged_form_is_refused(space: Space, registered: None) -> None:
    client = sign_in(space, space.alice)
    refused = client.post(PAGE, data={**_example_fields(), "csrf": "forged"})
    assert refused.status_code == 403 and not _studies(space)


def test_the_page_in_chinese(space: Space) -> None:
    page = sign_in(space, space.alice).get(PAGE, params={"lang": "zh"})
    assert "相似患者" in page.text and "1. 患者" in page.text and "查找相似患者" in page.text


def test_the_result_page_shows_groups_survival_nodes_and_distances(answered: Any) -> None:
    space, study_id = answered
    client = sign_in(space, space.alice)
    page = page_of(client, study_id)
    found = tables(page)
    groups = {row[0]: row for row in found["cds-groups"][2:]}
    assert groups["insulin"] == ["insulin", "44", "22.0 %", "12", "27.3 %", "<10",
                                 "0.0 – 20.0 %", "380.0", ""]
    assert groups["sulfonylurea"][1:3] == ["<10", "–"] and groups["sulfonylurea"][-2:] == [
        "–", "node-a"]
    assert groups["none of the candidates"][-2] == "not reached"
    assert "all matched" in groups
    assert found["cds-survival"][0] == ["Group", "Day 30", "Day 90", "Day 180", "Day 365"]
    assert found["cds-survival"][1] == ["insulin", "1.000", "0.950", "0.950", "0.900"]
    assert found["cds-nodes"][1:] == [["node-a", "1,105", "200"], ["Total", "", "200"]]
    assert found["cds-similarity"][1:] == [["0 – 0.5", "60"], ["0.5 – 1", "110"],
                                           ["≥ 1", "30"]]
    text = html.unescape(page)
    assert "LOINC:33914-3" in text and "Mean 0.71, SD 0.40." in text
    assert "1 node cells below the minimum cell size are not counted." in text
    assert f'src="/console/studies/{study_id}/chart/survival.svg?lang=en"' in page
    texts = svg_texts(check_svg_of(client, study_id, "survival"))
    assert {"Free of ckd among similar patients", "insulin", "none of the candidates",
            "all matched",
            "time", "survival probability"} <= set(texts)
    assert "sulfonylurea" not in texts  # no curve released
    rows = parse_csv(client.get(f"/console/studies/{study_id}/result.csv").text)
    assert rows[0] == {"group": "insulin", "kind": "treatment", "treated": "44",
                       "share": "0.22", "outcome": "ckd", "events": "12", "rate": "0.2727",
                       "rate_lower": "", "rate_upper": "", "median": "380.0"}
    assert rows[1]["median"] == ""  # the median is the km outcome's
    assert (rows[1]["rate"], rows[1]["rate_lower"], rows[1]["rate_upper"]) == ("", "0.0", "0.2")
    assert len(rows) == 8


def test_the_result_page_in_chinese(answered: Any) -> None:
    space, study_id = answered
    page = html.unescape(page_of(sign_in(space, space.alice), study_id, "zh"))
    assert "各治疗之后的情况" in page and "未接受任何候选治疗" in page
    assert "每个节点的相似患者数" in page
    assert "未发生 ckd 的比例（Kaplan–Meier）" in page


@needs_cjk
def test_the_figure_in_chinese() -> None:
    svg = charts.render("similar_patients", RESULT, {}, "survival", "svg", Translator("zh"))
    texts = svg_texts(svg)
    assert texts[0] == "各治疗组的无结局生存"
    assert {"相似患者中未发生 ckd 的比例", "未接受任何候选治疗", "全部匹配患者",
            "insulin"} <= set(texts)


def test_a_result_without_curves_has_no_figure() -> None:
    flat = {**RESULT, "groups": [{**g, "km": None} for g in RESULT["groups"]]}
    assert charts.charts_for("similar_patients", flat, {}) == []


def test_the_worked_example_on_the_synthetic_hospitals_gets_its_own_view(
        space: Space, monkeypatch: pytest.MonkeyPatch, synthetic_result: dict[str, Any]
) -> None:
    result = synthetic_result
    assert result["matched"] > 0 and set(result["nodes"]) == {"hospital_1", "hospital_2",
                                                              "hospital_3"}
    study_id = released(space, monkeypatch, result)
    client = sign_in(space, space.alice)
    page = page_of(client, study_id)
    assert "no dedicated view" not in page
    found = tables(page)
    assert [row[0] for row in found["cds-groups"][2:]] == [
        g["name"] if g["kind"] == "treatment" else cds_kind(g["kind"])
        for g in result["groups"]]
    assert [row[0] for row in found["cds-nodes"][1:-1]] == list(result["nodes"])
    assert len(found["cds-similarity"]) == 1 + len(result["similarity"]["counts"])
    texts = svg_texts(check_svg_of(client, study_id, "survival"))
    assert "Free of ckd among similar patients" in texts and "insulin" in texts
    assert client.get(f"/console/studies/{study_id}/result.csv").status_code == 200


def cds_kind(kind: str) -> str:
    return {"none": "none of the candidates", "all": "all matched"}[kind]
