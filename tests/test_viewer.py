"""The crop viewer on a real sqlite MLflow store laid out as the sample-crops contract says.

The store: one sweep run (`samples/crops.json`, `hr/<id>` and `bicubic/<id>` at step 0) and the 9
optimize runs of the demo's slice (3 fidelity backbones × (none, vanilla_conv, patch_resnet50)),
each with `sr/<id>` images at its evaluation steps (one stopped by ASHA after step 40, one
collapsed at 40), `health/*` metrics and outcome tags, all through `MlflowClient.log_image` and
`log_metric` as the tracking callback logs them. The SR crops are made from the HR crop so that
each run and each step has its own pixels.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow_store import new_store
from PIL import Image

from raygrid.analysis import viewer as V
from raygrid.spec import mlflow as names

BACKBONES = ["vgg16_r", "resnet50", "convnext_tiny"]
ADVERSARIAL = [("none", 0), ("vanilla_conv", 0.05), ("patch_resnet50", 0.05)]
STEPS = (20, 40, 60)
STOPPED = ("resnet50", "vanilla_conv")  # ASHA stopped it after step 40
COLLAPSED = ("convnext_tiny", "patch_resnet50")  # the loop stopped it at step 40


def _source_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def build_store(root: Path, crop_size: int = 48, n_crops: int = 2, experiment: str = "demo") -> dict:
    """A sqlite store with the demo's optimize slice; returns uri, experiment, sweep run id, run ids."""
    from mlflow.tracking import MlflowClient

    uri = new_store(root / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
    sweep = client.create_run(exp, run_name="sweep", tags={names.TAG_KIND: names.KIND_SWEEP}).info.run_id
    src = _source_image()
    rng = np.random.default_rng(0)
    crops, hr, bic = [], {}, {}
    for i in range(n_crops):
        top, left = 40 + 150 * (i // 3) + 60 * (i % 2), 40 + 150 * (i % 3)
        cid = f"c{i:02d}"
        crops.append({"id": cid, "set": "demo_sr_val", "image": "astronaut", "top": top, "left": left,
                      "size": crop_size, "kind": "detail" if i % 2 == 0 else "texture"})
        hr[cid] = src[top:top + crop_size, left:left + crop_size]
        lr = Image.fromarray(hr[cid]).resize((crop_size // 4,) * 2, Image.BICUBIC)
        bic[cid] = np.asarray(lr.resize((crop_size,) * 2, Image.BICUBIC))
        client.log_image(sweep, hr[cid], key=f"hr/{cid}", step=0)
        client.log_image(sweep, bic[cid], key=f"bicubic/{cid}", step=0)
    client.log_text(sweep, json.dumps({"crops": crops}), V.ARTIFACT_CROPS)
    runs = {}
    for t, (bb, (disc, weight)) in enumerate((bb, a) for bb in BACKBONES for a in ADVERSARIAL):
        point = {"fidelity.backbone": bb, "loss.adversarial_weight": weight, "adversarial.discriminator": disc, "seed": 0}
        trial = f"ab123_{t:05d}"
        run = client.create_run(exp, run_name=f"optimize-{trial}-{bb}-{weight}-{disc}-0", tags={
            names.PARENT_TAG: sweep, names.TAG_SWEEP_RUN: sweep, names.TAG_STAGE: "optimize",
            names.TAG_TRIAL_ID: trial, names.TAG_POINT: json.dumps(point)}).info.run_id
        for k, v in point.items():
            client.log_param(run, k, str(v))
        last = 40 if (bb, disc) in (STOPPED, COLLAPSED) else 60
        for step in (s for s in STEPS if s <= last):
            frac = step / 60 * (0.5 + 0.15 * BACKBONES.index(bb))
            for cid, ref in hr.items():
                sr = bic[cid] + frac * (ref.astype(float) - bic[cid])
                if disc != "none":
                    sr = sr + rng.normal(0, 4 + 8 * (disc == "patch_resnet50"), sr.shape)
                client.log_image(run, np.clip(sr, 0, 255).astype(np.uint8), key=f"sr/{cid}", step=step)
            client.log_metric(run, "health/grad_norm/fidelity", 1.0 / step + 0.01 * t, step=step)
            if disc != "none":
                client.log_metric(run, "health/grad_norm/adversarial", 0.2 + 0.01 * step, step=step)
                acc = 0.99 if (bb, disc) == COLLAPSED else 0.5 + step / 300
                client.log_metric(run, "health/d/accuracy", acc, step=step)
        # the headline metrics axis_importance ranks: the backbone drives the pooled PSNR
        for key, value in {"test/psnr_y": 20 + 2 * BACKBONES.index(bb) + 0.1 * rng.normal(),
                           "test/demo_sr_test/psnr_y": 20.0, "test/psnr_y_lo": 19.0, "val/psnr_y": 21.0}.items():
            client.log_metric(run, key, value, step=last)
        if (bb, disc) == COLLAPSED:
            client.set_tag(run, names.TAG_OUTCOME, "collapsed")
            client.set_tag(run, V.TAG_OUTCOME_STEP, "40")
            client.set_tag(run, V.TAG_OUTCOME_REASON, "discriminator accuracy above 0.98 for 3 evaluations")
        else:
            client.set_tag(run, names.TAG_OUTCOME, "stopped" if (bb, disc) == STOPPED else "finished")
        client.set_terminated(run)
        runs[(bb, disc)] = run
    client.set_terminated(sweep)
    return {"uri": uri, "experiment": experiment, "sweep": sweep, "runs": runs, "crops": crops}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def data(store):
    return V.viewer_data(store["uri"], store["experiment"])


def _payload(fragment: str) -> dict:
    m = re.search(r'<script type="application/json" class="rgv-data">(.*?)</script>', fragment, re.DOTALL)
    assert m, "the fragment embeds its data"
    return json.loads(m.group(1))


def _pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_logged_image_names_parse_both_delimiters_and_keep_the_latest(store):
    client = names.client(store["uri"])
    run = store["runs"][("vgg16_r", "none")]
    imgs = V.logged_images(client, run)
    assert sorted(imgs) == ["sr/c00", "sr/c01"] and sorted(imgs["sr/c00"]) == list(STEPS)
    m = V._IMAGE_FILE.match("sr~c00%step%20%timestamp%1700000000000%0b1c-2d.png")
    assert m and m["key"] == "sr~c00" and m["step"] == "20"
    assert V._IMAGE_FILE.match("sr~c00+step+20+timestamp+1+abc+compressed.webp") is None
    # a step logged again (a resumed trial) shows its latest image
    newer = np.zeros((48, 48, 3), np.uint8)
    client.log_image(store["sweep"], newer, key="probe/x", step=5, timestamp=2_000_000_000_000)
    client.log_image(store["sweep"], newer + 9, key="probe/x", step=5, timestamp=1_000_000_000_000)
    assert V.logged_images(client, store["sweep"])["probe/x"][5].timestamp == 2_000_000_000_000


def test_viewer_shows_the_nine_runs_of_the_slice_with_their_images_health_and_outcomes(store, data):
    fragment = V.render_viewer(data)
    d = _payload(fragment)
    assert d["rows"] == "fidelity.backbone" and d["cols"] == ["adversarial.discriminator", "loss.adversarial_weight"]
    assert d["axes"]["fidelity.backbone"] == BACKBONES
    assert d["axes"]["loss.adversarial_weight"] == ["0", "0.05"]
    assert d["steps"] == list(STEPS)
    cells = {(r["point"]["fidelity.backbone"], r["point"]["adversarial.discriminator"], r["point"]["loss.adversarial_weight"])
             for r in d["runs"]}
    assert cells == {(bb, disc, str(w)) for bb in BACKBONES for disc, w in ADVERSARIAL}  # 9 distinct cells
    by = {(r["point"]["fidelity.backbone"], r["point"]["adversarial.discriminator"]): r for r in d["runs"]}
    assert sorted(by[("vgg16_r", "none")]["sr"]["c00"], key=int) == ["20", "40", "60"]
    assert sorted(by[STOPPED]["sr"]["c00"], key=int) == ["20", "40"]
    # every step of a run is its own picture, and the SR differs from HR and from bicubic
    srs = [_pixels(by[("vgg16_r", "vanilla_conv")]["sr"]["c00"][s]) for s in ("20", "40", "60")]
    assert all(np.abs(a.astype(int) - b).mean() > 1 for a, b in itertools.pairwise(srs))
    crop = d["crops"][0]
    hr = _pixels(crop["hr"])
    assert hr.shape == (48, 48, 3) and np.abs(hr.astype(int) - _pixels(crop["bicubic"])).mean() > 1
    assert np.abs(hr.astype(int) - srs[0]).mean() > 1
    # PSNR from the logged PNGs: later steps of the no-GAN run come closer to HR
    psnr = by[("vgg16_r", "none")]["psnr"]["c00"]
    assert psnr["20"] < psnr["40"] < psnr["60"] and crop["bicubic_psnr"] < psnr["20"]
    # health: every health/* metric the run has, over its steps; outcomes other than finished
    assert sorted(by[("vgg16_r", "none")]["health"]) == ["health/grad_norm/fidelity"]
    assert sorted(by[COLLAPSED]["health"]) == ["health/d/accuracy", "health/grad_norm/adversarial", "health/grad_norm/fidelity"]
    assert [p[0] for p in by[COLLAPSED]["health"]["health/d/accuracy"]] == [20, 40]
    assert by[COLLAPSED]["outcome"] == "collapsed" and by[COLLAPSED]["outcome_step"] == "40"
    assert "discriminator accuracy" in by[COLLAPSED]["outcome_reason"]
    assert by[STOPPED]["outcome"] == "stopped" and by[("vgg16_r", "none")]["outcome"] == "finished"
    # self-contained: no URL to fetch, the JS and CSS inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", fragment)
    assert "function Viewer(root)" in fragment and ".rgv-grid" in fragment
    assert data["encoding"]["format"] == "webp" and data["encoding"]["floor"] > 0


def test_png_keeps_the_logged_pixels_and_bounds_shrink_the_page(store, data):
    exact = V.viewer_data(store["uri"], store["experiment"], image_format="png", crops=["c01"], max_steps=2)
    client = names.client(store["uri"])
    run = store["runs"][("resnet50", "none")]
    img = V.logged_images(client, run)["sr/c01"][60]
    logged = V._pixels(Path(client.download_artifacts(run, img.path, str(Path(store["uri"][10:]).parent))))
    r = next(r for r in exact["runs"] if r["id"] == run)
    assert np.array_equal(_pixels(r["sr"]["c01"]["60"]), logged) and exact["encoding"]["floor"] == 0
    assert [c["id"] for c in exact["crops"]] == ["c01"] and exact["steps"] == [20, 60]
    assert any("2 of 3 logged steps" in n for n in exact["notes"])
    assert V._pick_steps([20, 40, 60], 1) == [60] and V._pick_steps(list(range(0, 100, 10)), 4) == [0, 30, 60, 90]
    few = V.viewer_data(store["uri"], store["experiment"], max_runs=4, crops=["c00"])
    assert len(few["runs"]) == 4 and any("5 of 9 runs left out" in n for n in few["notes"])
    assert len(V.render_viewer(few)) < len(V.render_viewer(data))


def test_bad_input_is_one_line_naming_it(store, data, tmp_path):
    with pytest.raises(V.ViewerError, match=r"rows='fidelity.backbon' is not an axis .* axes: fidelity.backbone"):
        V.render_viewer(data, rows="fidelity.backbon")
    with pytest.raises(V.ViewerError, match="none of them the row axis"):
        V.render_viewer(data, rows="seed", cols=("seed",))
    with pytest.raises(V.ViewerError, match=r"crops=\['c09'\]: \['c09'\] not in run .* samples/crops.json"):
        V.viewer_data(store["uri"], store["experiment"], crops=["c09"])
    with pytest.raises(V.ViewerError, match="image_format = 'gif'"):
        V.viewer_data(store["uri"], store["experiment"], image_format="gif")
    with pytest.raises(V.ViewerError, match="no MLflow experiment named 'nope'"):
        V.viewer_data(store["uri"], "nope")
    with pytest.raises(V.ViewerError, match=r"crops\[0\] lacks \['image', 'kind', 'left', 'set', 'size', 'top'\]; expected keys"):
        V.parse_crops('{"crops": [{"id": "c00"}]}', "crops.json")
    with pytest.raises(V.ViewerError, match=r"crops\[0\].size = '48', expected int"):
        V.parse_crops(json.dumps({"crops": [{**store["crops"][0], "size": "48"}]}), "crops.json")


def test_importance_loads_the_same_store(store):
    """raygrid.analysis.importance reads trial runs from MLflow the same way (its loader)."""
    from raygrid.analysis import importance as I

    trials = I.load_trials(store["uri"], store["experiment"], "optimize", sweep_run_id=store["sweep"])
    assert len(trials) == 9 and trials["state"].value_counts().to_dict() == {"finished": 7, "stopped": 1, "collapsed": 1}
    axes = I.varying_axes(trials)
    assert axes == ["fidelity.backbone", "loss.adversarial_weight", "adversarial.discriminator"]
    assert I.headline_metrics(trials, "optimize") == ["test/psnr_y"]
    table = I.axis_importance(trials, axes, ["test/psnr_y"])
    assert list(table["axis"]) == ["fidelity.backbone", "loss.adversarial_weight × adversarial.discriminator"]
    assert set(table["n"]) == {7} and table.iloc[0]["p"] < 0.01
    frag = I.importance_section(trials, axes, ["test/psnr_y"])
    assert frag.count('class="parallel-coordinates"') == 1 and "data:image/png;base64," in frag


def test_a_sweep_without_crops_is_named(store, tmp_path):
    c = names.client(store["uri"])
    exp = c.create_experiment("bare", artifact_location=(tmp_path / "a").as_uri())
    c.create_run(exp, tags={names.TAG_KIND: names.KIND_SWEEP})
    with pytest.raises(V.ViewerError, match="no sweep run of experiment .* has samples/crops.json"):
        V.viewer_data(store["uri"], "bare")
    # crops and references, but runs that logged no SR crops
    sweep = c.create_run(exp, tags={names.TAG_KIND: names.KIND_SWEEP}).info.run_id
    crop = {**store["crops"][0], "id": "c00"}
    c.log_text(sweep, json.dumps({"crops": [crop]}), V.ARTIFACT_CROPS)
    c.log_image(sweep, np.zeros((48, 48, 3), np.uint8), key="hr/c00", step=0)
    with pytest.raises(V.ViewerError, match=r"sweep run .* has no image bicubic/c00 at step 0"):
        V.viewer_data(store["uri"], "bare", sweep_run_id=sweep)
    c.log_image(sweep, np.zeros((48, 48, 3), np.uint8), key="bicubic/c00", step=0)
    c.create_run(exp, tags={names.TAG_SWEEP_RUN: sweep, names.TAG_STAGE: "optimize", names.TAG_TRIAL_ID: "t0"})
    with pytest.raises(V.ViewerError, match=r"none of the 1 optimize runs of sweep run .* has an image sr/<crop id>"):
        V.viewer_data(store["uri"], "bare", sweep_run_id=sweep)


# ---------------------------------------------------------------------------------------------
# In a real browser (slow lane)
# ---------------------------------------------------------------------------------------------

SCREENSHOT = Path("/tmp/raygrid-viewer.png")


@pytest.fixture(scope="module")
def page_file(store, tmp_path_factory):
    html = V.viewer_page(V.crop_viewer(store["uri"], store["experiment"]))
    path = tmp_path_factory.mktemp("page") / "viewer.html"
    path.write_text(html)
    return path


def _launch(p):
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.fail("the viewer browser test needs Debian's chromium (/usr/bin/chromium): bash tests/setup.sh", pytrace=False)
    return p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])


def _ready(page, previous: int) -> int:
    page.wait_for_function(f"+document.querySelector('.rgv').dataset.ready > {previous}", timeout=30_000)
    return int(page.eval_on_selector(".rgv", "e => e.dataset.ready"))


@pytest.mark.slow
def test_viewer_in_chromium_slider_error_map_enlarge(page_file, store):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the viewer browser test needs playwright: pip install -e '.[test]'", pytrace=False)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        n = _ready(page, 0)
        # the 9 runs side by side: 3 rows × 3 columns of one image each, laid out as a grid
        runs = page.query_selector_all(".rgv-run")
        assert len(runs) == 9
        boxes = [r.bounding_box() for r in runs]
        assert len({round(b["y"]) for b in boxes}) == 3 and len({round(b["x"]) for b in boxes}) == 3
        heads = page.eval_on_selector_all(".rgv-rowhead", "es => es.map(e => e.textContent)")
        assert heads == BACKBONES
        assert len(page.query_selector_all(".rgv-colhead")) == 3
        one = store["runs"][("vgg16_r", "vanilla_conv")]
        sel = f'.rgv-run[data-run="{one}"] img.rgv-img'
        last = page.get_attribute(sel, "src")
        # the step slider: the image changes, the stopped run shows its last step with a badge
        page.fill(".rgv-step", "0")  # range inputs take fill() and fire input
        n = _ready(page, n)
        first = page.get_attribute(sel, "src")
        assert first != last and page.text_content(".rgv-step-label") == "step 20"
        page.fill(".rgv-step", "2")
        n = _ready(page, n)
        stopped = store["runs"][STOPPED]
        assert page.text_content(f'.rgv-run[data-run="{stopped}"] .rgv-offstep') == "step 40"
        assert "collapsed at 40" in page.text_content(f'.rgv-run[data-run="{store["runs"][COLLAPSED]}"]')
        spark = page.query_selector_all(f'.rgv-run[data-run="{store["runs"][COLLAPSED]}"] svg.rgv-sparkline')
        assert len(spark) == 3
        # the error map: canvases replace the SR and bicubic images, with non-zero pixels
        page.check(".rgv-err")
        n = _ready(page, n)
        assert len(page.query_selector_all("canvas.rgv-errmap")) == 10  # 9 SR + bicubic
        mean = page.eval_on_selector(f'.rgv-run[data-run="{one}"] canvas.rgv-errmap', """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
            return s / (d.length / 4); }""")
        assert mean > 30
        page.uncheck(".rgv-err")
        n = _ready(page, n)
        # click to enlarge: bicubic | SR | HR at a larger size; Escape closes
        page.click(sel)
        n = _ready(page, n)
        assert page.is_visible(".rgv-modal")
        big = page.query_selector_all(".rgv-modal img.rgv-img")
        assert len(big) == 3 and big[1].bounding_box()["width"] >= 3 * 48
        page.screenshot(path=str(SCREENSHOT.with_name("raygrid-viewer-enlarged.png")))
        page.keyboard.press("Escape")
        assert not page.is_visible(".rgv-modal")
        # switching the slice: rows = discriminator, columns = backbone
        page.select_option(".rgv-rows", "adversarial.discriminator")
        page.select_option(".rgv-col1", "fidelity.backbone")
        page.select_option(".rgv-col2", "")
        n = _ready(page, n)
        assert page.eval_on_selector_all(".rgv-rowhead", "es => es.map(e => e.textContent)") == [a for a, _ in ADVERSARIAL]
        assert len(page.query_selector_all(".rgv-run")) == 9
        # one column axis (the weight): a cell holds both GAN runs, counted by outcome; the
        # discriminator becomes a filter
        page.select_option(".rgv-rows", "fidelity.backbone")
        page.select_option(".rgv-col1", "loss.adversarial_weight")
        n = _ready(page, n)
        assert page.eval_on_selector_all(".rgv-counts", "es => es.map(e => e.textContent)") == [
            "2 runs: 2 finished", "2 runs: 1 finished, 1 stopped", "2 runs: 1 finished, 1 collapsed"]
        page.select_option('.rgv-filter[data-axis="adversarial.discriminator"]', "patch_resnet50")
        n = _ready(page, n)
        assert len(page.query_selector_all(".rgv-run")) == 3
        page.select_option('.rgv-filter[data-axis="adversarial.discriminator"]', "*")
        page.select_option(".rgv-col1", "adversarial.discriminator")
        page.select_option(".rgv-col2", "loss.adversarial_weight")
        _ready(page, n)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert page.get_attribute(".rgv", "data-error") is None
        browser.close()
    assert errors == []


class Marionette:
    """Firefox's own remote protocol (what geckodriver speaks): length-prefixed JSON over TCP.
    Playwright's Firefox is a patched build that cannot be downloaded here; Debian's firefox-esr
    is driven through this instead."""

    KEY_HOME, KEY_ESCAPE = "\ue011", "\ue00c"
    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, exe: str, profile: Path):
        import socket
        import subprocess
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (profile / "user.js").write_text(f'user_pref("marionette.port", {port});\n'
                                         'user_pref("browser.shell.checkDefaultBrowser", false);\n')
        self.proc = subprocess.Popen([exe, "--headless", "--marionette", "--no-remote", "--profile", str(profile)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise
                time.sleep(0.1)
        self.buf, self.n = b"", 0
        assert self._read()["applicationType"] == "gecko"
        self.cmd("WebDriver:NewSession", {"capabilities": {}})

    def _read(self):
        while b":" not in self.buf:
            self.buf += self.sock.recv(65536)
        size, rest = self.buf.split(b":", 1)
        while len(rest) < int(size):
            rest += self.sock.recv(65536)
        self.buf = rest[int(size):]
        return json.loads(rest[:int(size)])

    def cmd(self, name: str, params: dict | None = None):
        self.n += 1
        msg = json.dumps([0, self.n, name, params or {}]).encode()
        self.sock.sendall(str(len(msg)).encode() + b":" + msg)
        while True:
            kind, n, error, result = self._read()
            if kind == 1 and n == self.n:
                if error:
                    raise AssertionError(f"{name}: {error}")
                return result

    def js(self, script: str, *args):
        return self.cmd("WebDriver:ExecuteScript", {"script": script, "args": list(args)})["value"]

    def find(self, css: str) -> str:
        return self.cmd("WebDriver:FindElement", {"using": "css selector", "value": css})["value"][self.ELEMENT]

    def click(self, css: str) -> None:
        self.cmd("WebDriver:ElementClick", {"id": self.find(css)})

    def keys(self, css: str, text: str) -> None:
        self.cmd("WebDriver:ElementSendKeys", {"id": self.find(css), "text": text})

    def ready(self, previous: int) -> int:
        import time

        deadline = time.monotonic() + 30
        while (n := int(self.js("return document.querySelector('.rgv').dataset.ready || 0"))) <= previous:
            assert time.monotonic() < deadline, "the viewer did not finish rendering"
            time.sleep(0.05)
        return n

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.mark.slow
def test_viewer_in_firefox_esr(page_file, store, tmp_path):
    exe = shutil.which("firefox-esr")
    if exe is None:
        pytest.fail("Debian's firefox-esr is not installed (apt-get install -y firefox-esr; tests/setup.sh does it)", pytrace=False)
    ff = Marionette(exe, tmp_path)
    try:
        ff.cmd("WebDriver:Navigate", {"url": page_file.as_uri()})
        n = ff.ready(0)
        ff.js("window.__errors = []; window.addEventListener('error', e => __errors.push(e.message));"
              "window.addEventListener('unhandledrejection', e => __errors.push(String(e.reason)));")
        boxes = ff.js("return [...document.querySelectorAll('.rgv-run')].map(e => e.getBoundingClientRect())"
                      ".map(b => [Math.round(b.x), Math.round(b.y)])")
        assert len(boxes) == 9 and len({x for x, _ in boxes}) == 3 and len({y for _, y in boxes}) == 3
        sel = f'.rgv-run[data-run="{store["runs"][("vgg16_r", "vanilla_conv")]}"] img.rgv-img'
        last = ff.js("return document.querySelector(arguments[0]).src", sel)
        ff.keys(".rgv-step", Marionette.KEY_HOME)  # a real key press on the slider: to its first step
        n = ff.ready(n)
        assert ff.js("return document.querySelector('.rgv-step-label').textContent") == "step 20"
        assert ff.js("return document.querySelector(arguments[0]).src", sel) != last
        ff.click(".rgv-err")
        n = ff.ready(n)
        mean = ff.js("""const c = document.querySelector(arguments[0].replace('img.rgv-img', 'canvas.rgv-errmap'));
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
            return [document.querySelectorAll('canvas.rgv-errmap').length, s / (d.length / 4)];""", sel)
        assert mean[0] == 10 and mean[1] > 30
        ff.click(".rgv-err")
        n = ff.ready(n)
        ff.click(sel)
        ff.ready(n)
        assert ff.js("return !document.querySelector('.rgv-modal').hidden && "
                     "document.querySelectorAll('.rgv-modal img.rgv-img').length") == 3
        ff.keys(".rgv-step", Marionette.KEY_ESCAPE)
        assert ff.js("return document.querySelector('.rgv-modal').hidden") is True
        assert ff.js("return [window.__errors, document.querySelector('.rgv').dataset.error || null]") == [[], None]
    finally:
        ff.close()
