"""The HTML report: files, figures, artifacts, what it says, a partial sweep, the CLI, the
per-generator rows and what people saw; in the slow lane a headless Chromium and a real CPU sweep.

The Chromium tests need Debian's `chromium` package (`apt-get install -y chromium`); they fail, not
skip, when the browser is missing, so CI cannot pass without having looked at the page.
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_fixtures as F
from PIL import Image

from raygrid.analysis.load import load_sweep
from raygrid.analysis.report import (
    build_report,
    default_sections,
    embedded_figures,
    representative_runs,
    sr_sample_tiles,
)
from raygrid.cli import main as raygrid_main
from raygrid.spec import mlflow as names

FIGURES = {"optimization_heatmap", "asymmetry_scatter", "transfer", "curves_optimize", "curves_transfer", "samples"}
CSVS = {"assessment.csv", "optimization.csv", "asymmetry.csv", "asymmetry_ranks.csv", "discriminators.csv",
        "transfer.csv", "transfer_differences.csv", "not_compared.csv", "trials_overview.csv"}
ANCHORS = ("overview", "assess", "optimize", "importance", "asymmetry", "discriminators", "transfer", "people", "curves",
           "samples", "not-compared", "methods")


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return F.shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    """The full fixture sweep's report, logged to its sweep run; the demo test set (for the SR
    samples) is found under the default data root ($RAYGRID_CACHE, set by conftest)."""
    out = tmp_path_factory.mktemp("report")
    return Path(build_report(store["experiment"], tracking_uri=store["tracking_uri"], sweep_run_id=store["sweep_run_id"],
                             out_dir=str(out), n_boot=200))


@pytest.fixture(scope="module")
def page(report) -> str:
    return report.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Files and what the page says
# ---------------------------------------------------------------------------------------------


def test_report_writes_html_csv_and_png(report, page):
    out = report.parent
    assert report.name == "index.html"
    found = {p.name for p in out.iterdir()}
    assert CSVS <= found and {f"{f}.png" for f in FIGURES} <= found
    for anchor in ANCHORS:
        assert page.count(f'id="{anchor}"') == 1
    assert [s.anchor for s in default_sections()] == list(ANCHORS)
    assert "could not be produced" not in page  # no section broke
    # self-contained: no scripts, no external stylesheets, fonts or images
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page) and "url(http" not in page
    # the CSVs are the analysis tables
    asym = pd.read_csv(out / "asymmetry.csv")
    row = asym[(asym["setting"] == "no adversarial loss") & (asym["panel"] == "all evaluators")].iloc[0]
    assert row["spearman"] == pytest.approx(-1.0) and row["iqa_variant"] == "uniform"
    assessment = pd.read_csv(out / "assessment.csv")
    assert len(assessment) == 16 and assessment["srcc"].isna().sum() == 2  # failed + never ran
    assert len(pd.read_csv(out / "not_compared.csv")) == 6


def test_trials_that_missed_the_common_step_are_listed_not_ranked(page, report):
    # listed with their outcome and step, never pooled: their cells say so
    for line in ("stopped at step 20", "collapsed at step 20", "failed: RuntimeError: CUDA error: out of memory (raygrid/stages/optimize/loop.py:88 in step)"):
        assert line in page
    assert "0/1 compared; 1 collapsed at step 20" in page and "0/1 compared; 1 not run" in page
    ranks = pd.read_csv(report.parent / "asymmetry_ranks.csv")
    assert ranks["n_evaluators"].dropna().max() <= 7
    assert "optimize at step 30 (final)" in page and "transfer at the best evaluation up to step 30 by val/srcc" in page


def test_the_page_says_what_is_resampled_and_what_is_left_out(page):
    methods = page[page.index('id="methods"'):]
    assert "whole reference images (unit: a reference with all its distorted pairs" in methods
    assert "test images within each test set (3 in 1 sets); seeds not resampled (only 1); evaluators (7" in methods
    assert "IQA reference images within each benchmark (12 in 3 benchmarks)" in methods
    assert "shares a trunk with a run&#x27;s loss backbone or its discriminator trunk" in methods
    assert "every table and ranking uses test/ sets only" in methods
    # the robustness row, the flip, the α/β pairing and the unit of the IQA intervals
    assert "Robustness: judged by the independent panel only" in page and "yes: ρ -1.00 → +1.00" in page
    assert "IQA α/β &#x27;fitted on kadid10k&#x27;: no optimize arm was trained with these α/β" in page
    assert "The bootstrap resamples reference images: the unit is the reference image" in page
    # the evaluators as their records describe them (no list of the analysis's own)
    evaluators = page[page.index("The evaluators (from the runs' evaluator records)"):page.index('id="asymmetry"')]
    assert "<td>niqe</td><td>natural scene statistics</td><td>NR</td><td>no</td>" in evaluators


def test_without_judgements_the_page_says_how_to_collect_them(page):
    people = page[page.index('id="people"'):page.index('id="curves"')]
    assert "No human judgements yet" in people and "python -m raygrid.judge --experiment fixture" in people


def test_embedded_figures_are_pngs_identical_to_the_files(report):
    figs = embedded_figures(str(report))
    assert set(figs) == FIGURES
    for name, blob in figs.items():
        img = Image.open(io.BytesIO(blob))
        assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 150
        img.verify()
        assert (report.parent / f"{name}.png").read_bytes() == blob


def test_report_is_logged_to_the_sweep_run(report, store):
    client = names.client(store["tracking_uri"])
    logged = {Path(a.path).name for a in client.list_artifacts(store["sweep_run_id"], "report")}
    assert {"index.html", "asymmetry.csv", "samples.png"} <= logged


def test_sr_samples_and_runs_without_weights(page, store):
    # 8 representative runs; 5 of them have checkpoints without generator weights
    assert page.count("holds no generator weights") == 5
    data = load_sweep(store["experiment"], store["tracking_uri"])
    reps = representative_runs(data)
    from raygrid.io import data_root

    tiles, notes = sr_sample_tiles(data, reps.head(2), data_root())
    # LR, the SR of the two vgg16_r runs (both have weights), HR: 32×32 LR crop → 128×128
    assert tiles[0][0].startswith("LR (demo_sr_val") and tiles[-1][0] == "HR" and len(tiles) == 4
    assert all(t[1].shape == (128, 128, 3) for t in tiles) and notes == []
    assert not np.allclose(tiles[1][1], tiles[2][1])  # two different generators
    # a run without checkpoint artifacts (the failed assess trial) gets a note, not an exception
    failed = data.trials[data.trials["run_id"] == store["run_ids"][("assess", *F.ASSESS_FAILED)]]
    failed = failed.assign(**{"params.data.test": reps.iloc[0]["params.data.test"], "backbone": F.R,
                              "discriminator": "none", "adv_weight": 0.0})
    tiles, notes = sr_sample_tiles(data, failed, data_root())
    assert len(tiles) == 2 and "no checkpoints/final/model.pt artifact" in notes[0]


def test_per_trial_values_at_the_common_step_for_the_views(store):
    from raygrid.analysis.report import Report, ReportOptions

    r = Report(load_sweep(store["experiment"], store["tracking_uri"]), ReportOptions(n_boot=0))
    opt = r.trials_at_step("optimize")
    assert len(opt) == 20 and (opt["state"] == "compared").sum() == 17
    assert set(opt.loc[opt["state"] != "compared", "state"]) == {"stopped", "collapsed", "failed"}
    none_r = opt[(opt["params.fidelity.backbone"] == F.R) & (opt["params.adversarial.discriminator"] == "none")].iloc[0]
    assert none_r["metrics.test/psnr_y"] == pytest.approx(23.5) and none_r["metrics.test/niqe"] == pytest.approx(3.0)
    tr = r.trials_at_step("transfer")
    # transfer is compared at its best step 20: imagenet seed 0 live .9 (its last logged value is .8)
    first = tr[(tr["params.model.init"] == "imagenet") & (tr["params.seed"] == "0")].iloc[0]
    assert first["metrics.test/live/srcc"] == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------------
# A partial sweep, the CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def partial_store(tmp_path_factory):
    F.shared_store(tmp_path_factory)  # the same sqlite file: build the full one first
    return F.shared_store(tmp_path_factory, "partial")


def test_partial_sweep_report_states_what_is_missing(partial_store, tmp_path):
    path = build_report(partial_store["experiment"], tracking_uri=partial_store["tracking_uri"],
                        out_dir=str(tmp_path / "partial"), n_boot=50)
    html = Path(path).read_text(encoding="utf-8")
    assert "could not be produced" not in html
    assert "Stage optimize: planned but never started (20 trials)." in html
    assert "Stage transfer: planned but never started (9 trials)." in html
    assert "asymmetry not computed: no per-item results of optimize at the common step." in html
    assert "No compared optimize run: no SR samples." in html
    assert embedded_figures(path) == {}
    opt = pd.read_csv(tmp_path / "partial" / "optimization.csv")
    assert len(opt) == 20 and set(opt["status"]) == {"0/1 compared; 1 not run"}
    assert len(pd.read_csv(tmp_path / "partial" / "assessment.csv")) == 16


def test_cli(partial_store, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = raygrid_main(["report", "--experiment", partial_store["experiment"], "--tracking-uri",
                       partial_store["tracking_uri"], "--out", str(out), "--no-samples", "--n-boot", "20",
                       "--checkpoint", "final"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out / "index.html")
    assert "assess at step 1 (final)" in (out / "index.html").read_text(encoding="utf-8")
    rc = raygrid_main(["report", "--experiment", "no-such-sweep", "--tracking-uri", partial_store["tracking_uri"],
                       "--out", str(out)])
    assert rc == 2 and "no MLflow experiment named 'no-such-sweep'" in capsys.readouterr().err


def test_a_section_can_be_added_and_a_broken_one_does_not_take_the_page_down(partial_store, tmp_path):
    from raygrid.analysis.report import SectionSpec
    from raygrid.analysis.report.html import paragraph

    def extra(report, section):  # what a section added by the views (viewer, importance) looks like
        section.add(paragraph(f"{len(report.data.trials)} trials read; {len(report.optimization)} optimize cells"))

    def broken(report, section):
        raise RuntimeError("boom")

    specs = [*default_sections()[:1], SectionSpec("extra", "Extra", extra), SectionSpec("broken", "Broken", broken)]
    path = build_report(partial_store["experiment"], tracking_uri=partial_store["tracking_uri"],
                        out_dir=str(tmp_path / "extra"), n_boot=0, samples=False, sections_list=specs)
    html = Path(path).read_text(encoding="utf-8")
    assert "45 trials read; 20 optimize cells" in html and 'id="overview"' in html
    assert "Broken could not be produced: RuntimeError: boom" in html


# ---------------------------------------------------------------------------------------------
# Two generators, and what people saw
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def generator_store(tmp_path_factory):
    F.shared_store(tmp_path_factory)
    return F.shared_store(tmp_path_factory, "generators")


def _judge(store: dict, tmp: Path) -> int:
    """Two judges compare every pair of the six runs on three crops, preferring the IQA order of
    the backbones (v > res > r) whatever the generator; synced to MLflow by raygrid.judge."""
    from raygrid.judge.schema import item_key
    from raygrid.judge.store import JudgementStore
    from raygrid.judge.sync import sync

    data = load_sweep(store["experiment"], store["tracking_uri"])
    runs = data.compared("optimize")
    quality = {F.V: 3, F.RES: 2, F.R: 1}
    db = JudgementStore(tmp / "judgements.sqlite")
    pairs = itertools.product(["ana", "ben"], ["c00", "c01", "c02"], itertools.combinations(range(len(runs)), 2))
    for seq, (judge, crop, (a, b)) in enumerate(pairs, start=1):
        left, right = runs.iloc[a], runs.iloc[b]
        qa, qb = quality[left["params.fidelity.backbone"]], quality[right["params.fidelity.backbone"]]
        db.add({"id": str(uuid.uuid4()), "experiment": store["experiment"], "judge": judge, "sitting": judge, "seq": seq,
                "crop_id": crop, "left_run": left["run_id"], "right_run": right["run_id"],
                "left_item": item_key(left["point"]), "right_item": item_key(right["point"]), "left_step": 10,
                "right_step": 10, "choice": "same" if qa == qb else ("left" if qa > qb else "right"),
                "elapsed_ms": 2500, "repeat_of": None, "source": "logged"})
    return sync(db, store["tracking_uri"], store["experiment"])[2]


def test_per_generator_rows_and_what_people_saw(generator_store, tmp_path):
    assert _judge(generator_store, tmp_path) == 2 * 3 * 15
    path = build_report(generator_store["experiment"], tracking_uri=generator_store["tracking_uri"],
                        out_dir=str(tmp_path / "gen"), n_boot=100, samples=False)
    html = Path(path).read_text(encoding="utf-8")
    assert "could not be produced" not in html
    asym = pd.read_csv(tmp_path / "gen" / "asymmetry.csv")
    per = asym[(asym["panel"] == "all evaluators") & (asym["generator"] != "all")].set_index("generator")
    # IQA order v, res, r; SwinIR's outputs are ranked in that order by every evaluator, HAT's in reverse
    assert per["spearman"].to_dict() == pytest.approx({"swinir": 1.0, "hat": -1.0})
    assert "Per generator.arch" in html and "per generator.arch: the conclusion differs between generators" in html
    people = html[html.index('id="people"'):html.index('id="curves"')]
    assert "90 paired comparisons by 2 judge(s)" in people and "The human ranking of the optimize settings" in people
    human = pd.read_csv(tmp_path / "gen" / "human_asymmetry.csv")
    # people prefer v > res > r, the IQA order: ρ = +1 against the human ranking
    assert human.set_index("setting").loc["all judged settings", "spearman"] == pytest.approx(1.0)
    agree = pd.read_csv(tmp_path / "gen" / "evaluator_agreement.csv").set_index("evaluator")
    # a fidelity evaluator never judges a pair with a run trained on its own backbone
    assert agree.loc[f"fidelity_{F.R}", "excluded_same_backbone"] > 0 and agree.loc["psnr_y", "excluded_same_backbone"] == 0


# ---------------------------------------------------------------------------------------------
# Slow lane: a real CPU sweep with two generators; headless Chromium
# ---------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]

# A page that loads the report in an iframe and, once everything has loaded, lists every image's
# decoded size: what the browser really rendered, read back with --dump-dom.
PROBE = """<!DOCTYPE html><html><body><iframe id="r" src="{url}" style="width:1280px;height:900px"></iframe>
<script>
window.addEventListener("load", function () {{
  var d = document.getElementById("r").contentDocument, out = [];
  if (!d) {{ out.push("NO-ACCESS"); }} else {{
    for (var i = 0; i < d.images.length; i++) {{
      var im = d.images[i];
      out.push((im.getAttribute("data-name") || ("#" + i)) + " " + im.complete + " " + im.naturalWidth + "x" + im.naturalHeight);
    }}
  }}
  var p = document.createElement("pre"); p.id = "probe"; p.textContent = out.join("\\n"); document.body.appendChild(p);
}});
</script></body></html>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.fail("headless Chromium is required for the report test: apt-get install -y chromium "
                    "(Debian's package; /usr/bin/chromium)", pytrace=False)
    return exe


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _console_lines(stderr: str) -> list[str]:
    # Chromium logs every console message (errors included) as "...:CONSOLE:<line>] "<message>"";
    # the report has no scripts, so any console line, uncaught error or load failure is a defect.
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln or "net::ERR_" in ln]


def _probe(page: Path, tmp: Path, name: str) -> tuple[dict[str, tuple[bool, int, int]], str]:
    probe = tmp / f"{name}-probe.html"
    probe.write_text(PROBE.format(url=page.resolve().as_uri()), encoding="utf-8")
    res = _run_chromium(["--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                        tmp / f"{name}-probe-profile")
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.DOTALL)
    assert m, "the probe found no report DOM:\n" + res.stdout[-2000:]
    out = {}
    for line in m.group(1).strip().splitlines():
        key, complete, size = line.split(" ")
        w, h = size.split("x")
        out[key] = (complete == "true", int(w), int(h))
    return out, res.stderr


@pytest.mark.slow  # a browser
def test_chromium_detects_console_errors_and_broken_images(tmp_path):
    """The checks below must be able to fail: a page with a script error and a broken image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img data-name="broken" src="data:image/png;base64,AAAA">'
                   '<script>throw new Error("boom")</script></body></html>')
    images, stderr = _probe(bad, tmp_path, "bad")
    assert images["broken"][1] == 0  # not decoded
    assert any("Uncaught Error: boom" in ln for ln in _console_lines(stderr))


@pytest.mark.slow  # a browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    res = _run_chromium(["--window-size=1280,4200", f"--screenshot={shot}", report.as_uri()], tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_lines(res.stderr) == []
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float) / 255.0
    assert img.shape[:2] == (4200, 1280)
    assert img.std() > 0.1  # not blank
    # the figures are there: the tables and text are grey/black, the heatmap and scatter are not
    mx, mn = img.max(-1), img.min(-1)
    colourful = ((mx - mn) / np.maximum(mx, 1e-6) > 0.5) & (mx > 0.2)
    assert colourful.mean() > 0.03, f"only {colourful.mean():.1%} colourful pixels"

    images, stderr = _probe(report, tmp_path, "report")
    assert _console_lines(stderr) == []
    png = {name: Image.open(io.BytesIO(blob)).size for name, blob in embedded_figures(str(report)).items()}
    assert set(images) == set(png) == FIGURES
    for name, (complete, w, h) in images.items():
        assert complete and (w, h) == png[name], f"{name}: browser decoded {w}x{h}, file is {png[name]}"
