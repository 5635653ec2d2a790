"""The study builder in process: the form's cohort, parameters and datasets as stored, the
policy check, a feasibility preview answered by a simulated node, code search over the
published vocabularies, field-named 422s, role refusals and the Chinese page."""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

import pytest
import yaml
from hubkit import Space
from test_console import _csrf, sign_in

from healthspace.core.models import StudyView
from healthspace.hub.console import builder_form as builder
from healthspace.hub.console.i18n import catalog

NEW = "/console/studies/new"
OBFUSCATED = {"count": 45, "min_cell_size": 10, "breakdown": None, "obfuscated": True,
              "low_limit": 10}
T2D = {"entry_kind": "condition", "entry_codes": "ICD10:E11%, ICD10:E13",
       "inc0_kind": "measurement", "inc0_codes": "LOINC:4548-4", "inc0_start": "-365",
       "inc0_end": "0", "inc0_op": "gt", "inc0_value": "7",
       "inc1_kind": "drug", "inc1_codes": "ATC:A10BA02", "inc1_start": "-365", "inc1_end": "0",
       "inc1_min": "2",
       "exc0_kind": "condition", "exc0_codes": "ICD10:C%", "exc0_end": "0",
       "age_min": "40", "age_max": "75", "sex": "F", "prior_days": "365"}
T2D_COHORT = {
    "entry": {"condition": {"codes": ["ICD10:E11%", "ICD10:E13"]}},
    "inclusion": [
        {"age": {"min": 40, "max": 75}},
        {"sex": "F"},
        {"observation_period": {"min_prior_observation_days": 365}},
        {"measurement": {"codes": ["LOINC:4548-4"], "window": [-365, 0], "value": {"gt": 7.0}}},
        {"drug": {"codes": ["ATC:A10BA02"], "window": [-365, 0], "occurrences": {"min": 2}}},
    ],
    "exclusion": [{"condition": {"codes": ["ICD10:C%"], "window": [None, 0]}}],
}


def _form(client: Any) -> str:
    page = client.get(NEW)
    assert page.status_code == 200, page.text
    return _csrf(page.text)


def _post(client: Any, action: str = "submit", json: bool = False, **fields: Any) -> Any:
    data = {"csrf": _form(client), "action": action, "analysis": "cohort_count",
            "cohort_count.breakdown": "on", **fields}
    headers = {"Accept": "application/json"} if json else {}
    return client.post(NEW, data=data, headers=headers, follow_redirects=False)


def _stored(space: Space) -> list[dict[str, Any]]:
    return list(space.hub.ok("GET", "/studies", space.hub.operator)["studies"])


def _field_error(page: str, key: str) -> str:
    found = re.search(rf'<p class="field-error" id="e-{re.escape(key.replace(".", "-"))}">'
                      r"([^<]*)</p>", page)
    assert found, f"no error shown next to {key}"
    return html.unescape(found.group(1))


def test_the_form_builds_exactly_the_cohort_expected(space: Space) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, **T2D, nodes=["node-a", "node-b"], purpose="drug_development",
                 title="T2D feasibility")
    assert done.status_code == 303
    study_id = int(done.headers["location"].rsplit("/", 1)[1])
    assert done.headers["location"] == f"/console/studies/{study_id}"
    stored = space.hub.study(space.alice, study_id)
    assert stored["cohort"] == T2D_COHORT
    assert (stored["analysis"], stored["nodes"], stored["purpose"], stored["title"]) == (
        "cohort_count", ["node-a", "node-b"], "drug_development", "T2D feasibility")
    assert stored["params"]["breakdown"] is True and stored["params"]["obfuscate"] is False
    assert stored["preview"] is False and stored["dataset"] is None
    assert client.get(done.headers["location"]).status_code == 200


def test_a_stored_cohort_comes_back_into_the_form_unchanged() -> None:
    view = StudyView.model_validate({
        "id": 7, "analysis": "cohort_count", "params": {}, "cohort": T2D_COHORT,
        "purpose": "research", "nodes": ["node-a"], "status": "completed", "round": 1,
        "submitted_by": "alice", "created_at": "2025-03-01T09:00:00Z",
        "updated_at": "2025-03-01T09:00:00Z"})
    values, skipped = builder.values_from_study(view)
    assert not skipped
    assert builder.cohort_from(values, lambda text, **kw: text) == (T2D_COHORT, {})


def test_starting_from_a_study_prefills_the_form(space: Space) -> None:
    client = sign_in(space, space.alice)
    study_id = int(_post(client, **T2D, nodes=["node-b"]).headers["location"].rsplit("/")[-1])
    page = client.get(f"{NEW}?from={study_id}")
    assert page.status_code == 200 and f"Started from study {study_id}." in page.text
    assert 'name="entry_codes" value="ICD10:E11%, ICD10:E13"' in page.text
    assert 'value="node-b" checked' in page.text and 'value="node-a" checked' not in page.text
    other = sign_in(space, space.bob)  # same organisation, not the submitter
    assert other.get(f"{NEW}?from={study_id}").status_code == 403


def test_the_policy_check_shows_each_decision_with_its_reasons(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L2",
                                      "allowed_purposes": ["research", "drug_development"]})
    client = sign_in(space, space.alice)
    fields = {**T2D, "nodes": ["node-a", "node-b"], "purpose": "drug_development"}
    page = _post(client, "check", **fields)
    assert page.status_code == 200
    api = hub.ok("POST", "/studies/check", space.alice, json={
        "analysis": "cohort_count", "cohort": T2D_COHORT, "nodes": ["node-a", "node-b"],
        "purpose": "drug_development"})["nodes"]
    assert (api["node-a"]["outcome"], api["node-b"]["outcome"]) == ("needs_approval", "deny")
    text = html.unescape(page.text)
    assert 'data-testid="decision-node-a">needs_approval<' in text
    assert 'data-testid="decision-node-b">deny<' in text
    denial = api["node-b"]["reasons"][0]
    assert denial["code"] == "purpose_not_allowed" and "drug_development" in denial["message"]
    assert f'data-code="purpose_not_allowed">{denial["message"]}</li>' in text
    assert 'name="entry_codes" value="ICD10:E11%, ICD10:E13"' in page.text  # form kept
    assert _stored(space) == []  # a check stores nothing
    answer = _post(client, "check", json=True, **fields)
    assert answer.status_code == 200 and answer.json()["ok"] is True
    assert 'data-testid="decision-node-b">deny<' in answer.json()["html"]


def test_a_preview_runs_at_once_and_shows_the_obfuscated_count_when_the_node_answers(
        space: Space) -> None:
    hub = space.hub
    client = sign_in(space, space.alice)
    done = _post(client, "preview", **T2D, nodes=["node-a"], analysis="glm")
    assert done.status_code == 303
    study_id = int(done.headers["location"].rsplit("/", 1)[1])
    assert done.headers["location"] == f"{NEW}/preview/{study_id}"
    stored = hub.study(space.alice, study_id)
    assert stored["preview"] is True and stored["analysis"] == "cohort_count"
    assert stored["cohort"] == T2D_COHORT and stored["status"] == "running"
    assert stored["params"]["breakdown"] is False
    waiting = client.get(done.headers["location"])
    assert waiting.status_code == 200
    assert 'data-testid="count-node-a">waiting<' in waiting.text
    assert f'href="{NEW}/preview/{study_id}">Refresh</a>' in waiting.text
    status = client.get(f"{NEW}/preview/{study_id}/status").json()
    assert status["terminal"] is False and status["status"] == "running"

    task = hub.next_task(space.node_a)
    assert task is not None and task["preview"] is True and task["study_id"] == study_id
    hub.post(space.node_a, task["task_id"], status="completed", partial=OBFUSCATED)
    result = hub.study(space.alice, study_id)["result"]
    assert result["sites"] == {"node-a": 45} and result["obfuscated"] is True
    page = client.get(done.headers["location"])
    assert 'data-testid="count-node-a">45<' in page.text
    assert 'data-testid="preview-total">45<' in page.text and "Obfuscated counts" in page.text
    status = client.get(f"{NEW}/preview/{study_id}/status").json()
    assert status["terminal"] is True and 'data-testid="count-node-a">45<' in status["html"]


def test_a_preview_through_the_script_answers_json_and_follows_the_status(
        space: Space) -> None:
    client = sign_in(space, space.alice)
    answer = _post(client, "preview", json=True, **T2D, nodes=["node-b"])
    assert answer.status_code == 201
    body = answer.json()
    assert body["ok"] is True and body["terminal"] is False
    assert client.get(body["status_url"]).json()["id"] == body["id"]
    bad = _post(client, "preview", json=True, entry_codes="")
    assert bad.status_code == 422 and "entry_codes" in bad.json()["errors"]


def test_a_rate_limited_preview_says_so(space: Space) -> None:
    space.hub.publish_policy(space.node_a, {"level": "L1", "previews": {
        "mode": "obfuscated", "per_hour": 1}})
    client = sign_in(space, space.alice)
    first = _post(client, "preview", **T2D, nodes=["node-a"])
    assert space.hub.study(space.alice, int(first.headers["location"].rsplit("/")[-1]))[
        "status"] == "running"
    second = _post(client, "preview", **T2D, nodes=["node-a"])
    study_id = int(second.headers["location"].rsplit("/")[-1])
    assert space.hub.study(space.alice, study_id)["status"] == "rejected"
    page = client.get(second.headers["location"])
    assert 'data-testid="rate-limited">Preview limit reached at node-a.' in page.text
    assert "1 previews in the last hour; the limit is 1 an hour" in page.text


@pytest.mark.parametrize(("fields", "key", "says"), [
    ({"entry_codes": "E11"}, "entry_codes",
     "cohort.entry.condition.codes: Value error, code 'E11' must look like VOCAB:CODE"),
    ({"age_min": "80", "age_max": "40"}, "age_min",
     "cohort.inclusion[0].age: Value error, age min 80 is greater than max 40"),
    ({"inc2_kind": "drug", "inc2_codes": "ATC:A10", "inc2_start": "10", "inc2_end": "-10"},
     "inc2_start", "cohort.inclusion[5].drug.window: Value error, window start 10 is after"),
    ({"exc1_kind": "drug", "exc1_codes": "ATC:A10", "exc1_start": "a year"}, "exc1_start",
     "Enter a whole number."),
    ({"inc2_codes": "ATC:A10"}, "inc2_kind", "Choose what the criterion looks for."),
    ({"exc1_kind": "visit", "exc1_codes": "Visit:IP", "exc1_op": "gt", "exc1_value": "3"},
     "exc1_value", "cohort.exclusion[1].visit.value: Value error, value filters are only"),
    ({"analysis": "glm", "glm.formula": "y ~ (", "dataset_choice": "t2d_complication_dataset"},
     "glm.formula", "params.formula: Value error, cannot parse formula"),
    ({"analysis": "glm", "glm.formula": "complication ~ age"}, "dataset_choice",
     "Choose an analysis dataset"),
    ({"analysis": "cox", "cox.duration": "time", "dataset_choice": "custom",
      "dataset_text": "covariates: [{name: Age, type: age}]"}, "dataset_text",
     "dataset.covariates[0].name:"),
    ({"analysis": "summary", "dataset_choice": "custom", "dataset_text": "/etc/passwd"},
     "dataset_text", "dataset: an analysis-dataset spec must be an object"),
    ({"cohort_count.obfuscate": "on", "cohort_count.dp_epsilon": "0.5"},
     "cohort_count.obfuscate", "params.obfuscate: Value error, choose dp_epsilon or obfuscate"),
    ({"analysis": "evidence_check", "evidence_check.payer": "node-payer", "nodes": ["node-a"]},
     "evidence_check.payer", "params.payer: payer 'node-payer' is not one of the study's nodes"),
    ({"purpose": "world_domination"}, "purpose", "purpose: unknown purpose 'world_domination'"),
])
def test_bad_input_is_a_422_naming_the_field_and_nothing_is_stored(
        space: Space, fields: dict[str, Any], key: str, says: str) -> None:
    client = sign_in(space, space.alice)
    page = _post(client, **{**T2D, **fields})
    assert page.status_code == 422
    assert _field_error(page.text, key).startswith(says)
    assert f'id="f-{key.replace(".", "-")}"' in page.text
    assert 'aria-invalid="true"' in page.text and 'role="alert"' in page.text
    assert f'href="#f-{key.replace(".", "-")}"' in page.text  # the summary links to it
    assert _stored(space) == []


def test_table_analyses_take_a_bundled_or_a_pasted_dataset_spec(space: Space) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, **T2D, analysis="cox", nodes=["node-a"],
                 dataset_choice="gliclazide_hf_dataset", **{
                     "cox.duration": "time", "cox.event": "event",
                     "cox.covariates": "age, male, ckd", "cox.ties": "breslow"})
    assert done.status_code == 303, done.text
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/")[-1]))
    example = resources.files("healthspace.examples").joinpath("gliclazide_hf_dataset.yaml")
    assert stored["dataset"] == yaml.safe_load(example.read_text(encoding="utf-8"))
    assert stored["cohort"] == T2D_COHORT
    assert {k: stored["params"][k] for k in ("duration", "event", "covariates", "ties")} == {
        "duration": "time", "event": "event", "covariates": ["age", "male", "ckd"],
        "ties": "breslow"}
    spec = {"covariates": [{"name": "age", "type": "age"}],
            "outcome": {"type": "binary", "condition": {"codes": ["ICD10:I50%"]},
                        "window": {"start": 1, "end": 365}, "event": "hf"}}
    done = _post(client, **T2D, analysis="glm", dataset_choice="custom",
                 dataset_text=yaml.safe_dump(spec), **{"glm.formula": "hf ~ age",
                                                       "glm.family": "binomial"})
    assert done.status_code == 303, done.text
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/")[-1]))
    assert stored["dataset"] == spec
    assert (stored["params"]["formula"], stored["params"]["family"]) == ("hf ~ age", "binomial")


def test_payer_analyses_take_no_cohort(space: Space) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, analysis="evidence_check", nodes=["node-payer", "node-a"],
                 purpose="payer_policy", entry_codes="", **{
                     "evidence_check.payer": "node-payer", "evidence_check.readmit_days": "10"})
    assert done.status_code == 303, done.text
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/")[-1]))
    assert stored["analysis"] == "evidence_check" and stored["cohort"] is None
    assert stored["params"]["payer"] == "node-payer" and stored["params"]["readmit_days"] == 10
    assert stored["params"]["readmissions"] is False  # the box was left unticked


GROUPED = {"entry_kind": "condition", "entry_codes": "ICD10:E11%, 201826",
           "inc0_kind": "drug", "inc0_codes": "1503297", "inc0_start": "-365", "inc0_end": "0",
           "inc0_group": "A",
           "inc1_kind": "drug", "inc1_codes": "ATC:A10BB%", "inc1_start": "-365",
           "inc1_end": "0", "inc1_group": "A",
           "inc2_kind": "measurement", "inc2_codes": "LOINC:4548-4", "inc2_op": "gte",
           "inc2_value": "6.5"}
GROUPED_COHORT = {
    "entry": {"condition": {"codes": ["ICD10:E11%"], "concepts": [201826]}},
    "inclusion": [
        {"any": [{"drug": {"concepts": [1503297], "window": [-365, 0]}},
                 {"drug": {"codes": ["ATC:A10BB%"], "window": [-365, 0]}}]},
        {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gte": 6.5}}},
    ],
}


def test_concept_ids_and_either_or_groups_build_the_cohort_and_come_back(
        space: Space) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, **GROUPED, nodes=["node-a"])
    assert done.status_code == 303, done.text
    study_id = int(done.headers["location"].rsplit("/", 1)[1])
    stored = space.hub.study(space.alice, study_id)
    assert stored["cohort"] == GROUPED_COHORT
    page = client.get(f"{NEW}?from={study_id}")
    assert "were left out" not in page.text
    assert 'name="inc0_codes" value="1503297"' in page.text
    assert 'name="entry_codes" value="ICD10:E11%, 201826"' in page.text
    values, skipped = builder.values_from_study(StudyView.model_validate(stored))
    assert not skipped and (values["inc0_group"], values["inc1_group"]) == ("A", "A")
    assert builder.cohort_from(values, lambda text, **kw: text) == (GROUPED_COHORT, {})


@pytest.mark.parametrize(("fields", "key", "says"), [
    ({"inc1_group": ""}, "inc0_group", "An either-or group needs at least two rows"),
    ({"inc3_group": "B"}, "inc3_group", "This row is empty: leave its group blank."),
    ({"inc1_group": "Z"}, "inc1_group", "Choose a group from the list."),
    ({"inc1_codes": "ATC"}, "inc1_codes",
     "cohort.inclusion[0].any[1].drug.codes: Value error, code 'ATC' must look like"),
    ({"round_timeout": "2"}, "round_timeout", "round_timeout_seconds: Input should be"),
    ({"round_timeout": "soon"}, "round_timeout", "Enter a whole number."),
])
def test_group_and_option_mistakes_are_named_and_nothing_is_stored(
        space: Space, fields: dict[str, Any], key: str, says: str) -> None:
    client = sign_in(space, space.alice)
    page = _post(client, **{**GROUPED, **fields})
    assert page.status_code == 422
    assert _field_error(page.text, key).startswith(says)
    assert _stored(space) == []


def test_study_options_and_advanced_parameters_are_stored_as_given(space: Space) -> None:
    client = sign_in(space, space.alice)
    page = client.get(NEW)
    assert 'id="f-fl_train-hidden"' in page.text and "More settings" in page.text
    assert re.search(r'id="f-cox-duration" name="cox.duration" value="[^"]*" '
                     r'list="dataset-columns"', page.text)
    assert '<option value="hba1c"></option>' in page.text  # every bundled dataset's columns
    done = _post(client, **T2D, analysis="fl_train", nodes=["node-a", "node-b"],
                 dataset_choice="t2d_complication_dataset", secure_aggregation="on",
                 round_timeout="600", **{
                     "fl_train.target": "complication", "fl_train.features": "age, male",
                     "fl_train.model": "mlp", "fl_train.rounds": "5",
                     "fl_train.hidden": "16, 8", "fl_train.patience": "2",
                     "fl_train.mu": "0.01", "fl_train.model_name": "t2d-risk"})
    assert done.status_code == 303, done.text
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/")[-1]))
    assert stored["secure_aggregation"] is True and stored["round_timeout_seconds"] == 600
    params = stored["params"]
    assert (params["hidden"], params["patience"], params["rounds"], params["model"]) == (
        [16, 8], 2, 5, "mlp")
    assert params["model_name"] == "t2d-risk"
    assert (params["mu"], params["batch_size"]) == (0.01, 32)  # the analysis' defaults
    again = client.get(f"{NEW}?from={stored['id']}")
    assert 'name="fl_train.hidden" value="16, 8"' in again.text
    assert 'name="secure_aggregation" value="on" checked' in again.text
    assert 'name="round_timeout" value="600"' in again.text
    bad = _post(client, **T2D, analysis="fl_train", dataset_choice="t2d_complication_dataset",
                **{"fl_train.target": "complication", "fl_train.features": "age",
                   "fl_train.hidden": "sixteen"})
    assert bad.status_code == 422
    assert _field_error(bad.text, "fl_train.hidden").startswith("params.hidden[0]:")
    assert "<details class=\"more\" open>" in bad.text  # the error is not hidden away


def test_pharmacovigilance_takes_no_cohort_and_keeps_its_lists(space: Space) -> None:
    client = sign_in(space, space.alice)
    done = _post(client, analysis="pv", entry_codes="", nodes=["node-a"], **{
        "pv.drugs": "A10BA02, C09", "pv.events": "", "pv.window_days": "60"})
    assert done.status_code == 303, done.text
    stored = space.hub.study(space.alice, int(done.headers["location"].rsplit("/")[-1]))
    assert stored["cohort"] is None and stored["analysis"] == "pv"
    assert (stored["params"]["drugs"], stored["params"]["window_days"]) == (
        ["A10BA02", "C09"], 60)


def test_code_search_returns_only_the_codes_the_nodes_published(space: Space) -> None:
    hub = space.hub
    for headers, vocabularies in (
            (space.node_a, {"ICD10": ["E11", "E11.9", "I10"], "ATC": ["A10BA02"]}),
            (space.node_b, {"ICD10": ["E11.65", "E13", "E11.9"]})):
        hub.ok("PUT", "/node/catalog", headers, json=hub.seal(headers, "catalog", {
            "tables": {"person": 1000}, "vocabularies": vocabularies}))
    client = sign_in(space, space.alice)

    def codes(**query: Any) -> list[tuple[str, list[str]]]:
        answer = client.get(f"{NEW}/codes", params=query)
        assert answer.status_code == 200 and answer.headers["content-type"] == \
            "application/json"
        return [(c["code"], c["nodes"]) for c in answer.json()["codes"]]

    assert codes(q="E11", vocab="ICD10") == [
        ("ICD10:E11", ["node-a"]), ("ICD10:E11.65", ["node-b"]),
        ("ICD10:E11.9", ["node-a", "node-b"])]
    assert [c for c, _ in codes(q="icd10:e1")] == [
        "ICD10:E11", "ICD10:E11.65", "ICD10:E11.9", "ICD10:E13"]
    assert codes(q="E11", node="node-b") == [("ICD10:E11.65", ["node-b"]),
                                             ("ICD10:E11.9", ["node-b"])]
    assert codes(q="A10", vocab="ICD10") == [] and codes(q="E12") == [] and codes(q="") == []
    assert codes(q="ATC:A10%") == [("ATC:A10BA02", ["node-a"])]
    client.cookies.clear()
    assert client.get(f"{NEW}/codes?q=E11", follow_redirects=False).status_code == 303


def test_data_holders_and_auditors_get_the_403_page(space: Space) -> None:
    alice = sign_in(space, space.alice)
    assert f'href="{NEW}"' in alice.get("/console/dashboard").text
    csrf = _form(alice)
    for who in (space.admin_a, space.auditor):
        client = sign_in(space, who)
        assert f'href="{NEW}"' not in client.get("/console/dashboard").text
        for response in (client.get(NEW), client.get(f"{NEW}/codes?q=E11"),
                         client.get(f"{NEW}/preview/1"),
                         client.post(NEW, data={"csrf": csrf, **T2D, "action": "submit",
                                                "analysis": "cohort_count"})):
            assert response.status_code == 403 and "This page is for" in response.text
    assert _stored(space) == []


def test_the_form_needs_the_session_csrf_token(space: Space) -> None:
    client = sign_in(space, space.alice)
    _form(client)
    forged = client.post(NEW, data={"csrf": "forged", **T2D, "action": "submit",
                                    "analysis": "cohort_count"})
    assert forged.status_code == 403 and _stored(space) == []


def test_the_form_in_chinese(space: Space) -> None:
    client = sign_in(space, space.alice)
    client.post("/console/language", data={"lang": "zh", "next": NEW})
    page = client.get(NEW)
    assert page.status_code == 200 and 'lang="zh-Hans"' in page.text
    for text in ("新建研究", "1. 队列", "入组事件", "检查策略", "预览人数", "提交研究",
                 "广义线性模型", "纳入条件 1", "排除条件 1", "女性"):
        assert text in page.text, text
    bad = client.post(NEW, data={"csrf": _csrf(page.text), **T2D, "age_min": "x",
                                 "action": "submit", "analysis": "cohort_count"})
    assert bad.status_code == 422 and "请更正以下字段" in bad.text and "请输入整数。" in bad.text


def test_every_label_of_the_builder_has_a_chinese_translation() -> None:
    zh = catalog("zh")
    offers = builder.ANALYSES.values()
    texts = {o.label for o in offers} | {o.cohortless for o in offers if o.cohortless}
    texts |= set(builder.PARAM_LABELS.values()) | set(builder.HINTS.values())
    texts |= set(builder.STATIC_LABELS.values()) | set(builder.ROW_LABELS.values())
    texts |= set(builder.EVENT_KINDS)
    assert sorted(texts - set(zh)) == []


def test_the_builder_pages_pass_the_csp(space: Space) -> None:
    client = sign_in(space, space.alice)
    page = client.get(NEW)
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "/console/static/builder.js" in page.text and "/console/static/builder.css" in page.text
    for asset in ("builder.js", "builder.css"):
        assert client.get(f"/console/static/{asset}").status_code == 200
