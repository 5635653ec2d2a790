"""Sites for federated-learning hub tests: a seeded ``analysis_data`` table per node, and
answers computed by the real ``fl_train`` code, posted signed and metered as a node does."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd
from hubkit import Headers, Hub

from healthspace.analyses.execute import run_local
from healthspace.core.canonical import canonical_json
from healthspace.core.envelope import seal

ROWS = 120  # rows each site holds
SEEDS = {"node-a": 1, "node-b": 2}


def site_table(name: str) -> duckdb.DuckDBPyConnection:
    """The site's ``analysis_data``: y ~ Bernoulli(logistic(x1 - x2 / 2)), seeded per site."""
    rng = np.random.default_rng(SEEDS[name])
    x1, x2 = rng.normal(size=ROWS), rng.normal(size=ROWS)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-(x1 - 0.5 * x2)))).astype(int)
    con = duckdb.connect()
    con.register("frame", pd.DataFrame({"y": y, "x1": x1, "x2": x2}))
    con.execute("CREATE TABLE analysis_data AS SELECT * FROM frame")
    con.unregister("frame")
    return con


def answer(hub: Hub, name: str, headers: Headers, task: dict[str, Any],
           con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Run the task's real local step on the site's table and post its partial, signed and
    metered like a node does (persons = rows the analysis used).

    The sites already hold ``analysis_data``: a task's cohort and dataset (when a study gives
    them) are what a real node would build that table from, so they are not rebuilt here.
    """
    run = run_local(con, site=name, analysis=task["analysis"], params=task["params"],
                    cohort=None, dataset=None, round_input=task["round_input"],
                    min_cell_size=task["min_cell_size"])
    payload = {"status": "completed", "partial": run.partial}
    meter = {"analysis": task["analysis"], "status": "completed", "persons": run.records,
             "bytes": len(canonical_json(payload))}
    envelope = seal("task.result", payload, hub.keys[name], node_id=hub.nodes[name],
                    study_id=task["study_id"], round=task["round"], meter=meter,
                    clock=hub.clock)
    ack: dict[str, Any] = hub.ok("POST", f"/node/tasks/{task['task_id']}/result", headers,
                                 json=envelope.model_dump(mode="json"))
    return ack
