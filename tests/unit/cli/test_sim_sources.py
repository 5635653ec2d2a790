"""``healthspace sim`` over --table files or --site folders, and the Kaplan–Meier PNG export."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from lifelines.datasets import load_rossi

import healthspace
from healthspace.cli.main import run

EXAMPLES = Path(healthspace.__file__).parent / "examples"


@pytest.fixture
def rossi_tables(tmp_path):
    df = load_rossi()
    argv = []
    for name, part in (("A", df.iloc[:200]), ("B", df.iloc[200:])):
        path = tmp_path / f"{name}.csv"
        part.to_csv(path, index=False)
        argv += ["--table", f"{name}={path}"]
    return argv


def test_km_plot_writes_a_png_image(rossi_tables, tmp_path, capsys):
    plot = tmp_path / "km.png"
    argv = ["sim", "km", *rossi_tables, "--duration", "week", "--event", "arrest",
            "--group", "fin", "--plot", str(plot), "--json"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["groups"]) == {"0", "1"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(plot)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot", "curve.pdf"], "PNG"),
        (["--plot", "/no/such/folder/km.png"], "does not exist"),
    ],
)
def test_km_plot_path_is_checked_before_any_work(rossi_tables, capsys, extra, message):
    argv = ["sim", "km", *rossi_tables, "--duration", "week", "--event", "arrest", *extra]
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_table_and_site_together_or_neither_exit_2(rossi_tables, tmp_path, capsys):
    argv = ["sim", "cox", "--duration", "week", "--event", "arrest", "--covariates", "fin"]
    assert run([*argv, *rossi_tables, "--site", f"X={tmp_path}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert run(argv) == 2
    assert "--table" in capsys.readouterr().err
    assert run([*argv, *rossi_tables, "--cohort", str(EXAMPLES / "gliclazide_hf_cohort.yaml")]) == 2
    assert "--site" in capsys.readouterr().err


def test_site_needs_cohort_and_dataset_for_table_analyses(synth_dir, capsys):
    site = ["--site", f"h1={synth_dir / 'hospital_1'}"]
    argv = ["sim", "km", "--duration", "time", "--event", "event", *site]
    assert run([*argv, "--cohort", str(EXAMPLES / "gliclazide_hf_cohort.yaml")]) == 2
    assert "dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_glm_over_omop_sites_with_cohort_and_dataset(synth_dir, capsys):
    argv = ["sim", "glm", "--formula", "event ~ C(drug, Treatment('metformin')) + age + male",
            "--family", "binomial", "--cohort", str(EXAMPLES / "gliclazide_hf_cohort.yaml"),
            "--dataset", str(EXAMPLES / "gliclazide_hf_dataset.yaml"), "--json"]
    for name in ("hospital_1", "hospital_2"):
        argv += ["--site", f"{name}={synth_dir / name}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    term = "C(drug, Treatment('metformin'))[T.gliclazide]"
    assert set(doc["params"]) == {"Intercept", term, "age", "male"}
    assert doc["nobs"] > 500
    assert doc["params"][term] > 0  # gliclazide users have more heart failure (built in)
