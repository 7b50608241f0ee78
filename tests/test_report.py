"""The HTML report: files, figures, artifacts, a partial sweep, the CLI, and a headless Chromium.

The Chromium tests (slow lane) need Debian's `chromium` package (`apt-get install -y chromium`);
they fail, not skip, when the browser is missing, so CI cannot pass without having looked at the page.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_fixtures as F
from PIL import Image

from raygrid.analysis import asymmetry as A
from raygrid.analysis.report import build_report, embedded_figures, sr_sample_tiles
from raygrid.analysis.sweep_data import load_sweep
from raygrid.cli import main as raygrid_main
from raygrid.spec import mlflow as names

FIGURES = {"optimization_heatmap", "asymmetry_scatter", "transfer", "curves_optimize", "curves_transfer", "samples"}
CSVS = {"assessment.csv", "optimization.csv", "asymmetry.csv", "asymmetry_ranks.csv", "discriminators.csv",
        "transfer.csv", "transfer_differences.csv", "missing_trials.csv", "trials_overview.csv"}


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return F.shared_store(tmp_path_factory)


@pytest.fixture(scope="session")
def partial_store(tmp_path_factory):
    F.shared_store(tmp_path_factory)  # the same sqlite file: build the full one first
    return F.shared_store(tmp_path_factory, partial=True)


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    """The full fixture sweep's report, logged to its sweep run; the demo val set (for the SR
    samples) is found under the default data root ($RAYGRID_CACHE, set by conftest)."""
    out = tmp_path_factory.mktemp("report")
    path = build_report(store["experiment"], tracking_uri=store["tracking_uri"], sweep_run_id=store["sweep_run_id"],
                        out_dir=str(out), n_boot=500)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_report_writes_html_csv_and_png(report):
    out = report.parent
    assert report.name == "index.html"
    names = {p.name for p in out.iterdir()}
    assert CSVS <= names and {f"{f}.png" for f in FIGURES} <= names
    html = report.read_text(encoding="utf-8")
    for anchor in ("overview", "assess", "optimize", "asymmetry", "discriminators", "transfer", "curves", "samples",
                   "missing", "methods"):
        assert html.count(f'id="{anchor}"') == 1
    assert "could not be produced" not in html  # no section broke
    # self-contained: no scripts, no external stylesheets, fonts or images
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html) and "url(http" not in html
    # the CSVs are the analysis tables
    asym = pd.read_csv(out / "asymmetry.csv")
    row = asym[(asym["iqa_variant"] == "uniform") & (asym["setting"] == "no adversarial loss")].iloc[0]
    assert row["spearman"] == pytest.approx(-0.4) and row["kendall"] == pytest.approx(-1 / 3)
    assessment = pd.read_csv(out / "assessment.csv")
    assert len(assessment) == 24 and assessment["srcc"].isna().sum() == 2  # failed + never ran
    missing = pd.read_csv(out / "missing_trials.csv")
    assert len(missing) == 4
    # missing cells are shown as missing, with the reason
    assert "0/1 ok, 1 not run" in html and "0/1 ok, 1 failed" in html


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


def test_sr_samples_and_runs_without_weights(report, store):
    html = report.read_text(encoding="utf-8")
    # 8 representative runs; 3 of them have checkpoints without generator weights
    assert html.count("holds no generator weights") == 3
    data = load_sweep(store["experiment"], store["tracking_uri"])
    reps = A.representative_runs(data)
    from raygrid.io import data_root

    tiles, notes = sr_sample_tiles(data, reps.head(2), data_root())
    # LR, the SR of the two vgg16_r runs (both have weights), HR: 32×32 LR crop → 128×128
    assert tiles[0][0].startswith("LR (") and tiles[-1][0] == "HR" and len(tiles) == 4
    assert all(t[1].shape == (128, 128, 3) for t in tiles) and notes == []
    assert not np.allclose(tiles[1][1], tiles[2][1])  # two different generators
    # a run without checkpoint artifacts (an assess run) gets a note, not an exception
    assess_run = data.stage("assess").iloc[:1].assign(**{"params.data.val": reps.iloc[0]["params.data.val"]})
    tiles, notes = sr_sample_tiles(data, assess_run, data_root())
    assert len(tiles) == 2 and "no checkpoints/best/model.pt artifact" in notes[0]


# ---------------------------------------------------------------------------------------------
# A partial sweep, the CLI
# ---------------------------------------------------------------------------------------------


def test_partial_sweep_report_states_what_is_missing(partial_store, tmp_path):
    path = build_report(partial_store["experiment"], tracking_uri=partial_store["tracking_uri"],
                        out_dir=str(tmp_path / "partial"), n_boot=100)
    html = Path(path).read_text(encoding="utf-8")
    assert "could not be produced" not in html
    assert "Stage optimize: planned but never started (20 trials)." in html
    assert "Stage transfer: planned but never started (9 trials)." in html
    assert "asymmetry not computed: no optimize trial has results yet" in html
    assert "No finished optimize run: no SR samples." in html
    assert embedded_figures(path) == {}
    opt = pd.read_csv(tmp_path / "partial" / "optimization.csv")
    assert len(opt) == 20 and set(opt["status"]) == {"0/1 ok, 1 not run"}
    assert len(pd.read_csv(tmp_path / "partial" / "assessment.csv")) == 24


def test_cli(partial_store, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = raygrid_main(["report", "--experiment", partial_store["experiment"], "--tracking-uri", partial_store["tracking_uri"],
                   "--out", str(out), "--no-samples", "--n-boot", "50", "--checkpoint", "final"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out / "index.html")
    assert "final checkpoint" in (out / "index.html").read_text(encoding="utf-8")
    rc = raygrid_main(["report", "--experiment", "no-such-sweep", "--tracking-uri", partial_store["tracking_uri"], "--out", str(out)])
    assert rc == 2 and "no MLflow experiment named 'no-such-sweep'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Headless Chromium
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


def _probe(page: Path, tmp: Path, name: str) -> dict[str, tuple[bool, int, int]]:
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
