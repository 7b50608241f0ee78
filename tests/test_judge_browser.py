"""The judging page in Debian's headless Chromium, driven by Playwright with the keyboard.

Needs `pip install -e .[test]` (playwright; its own browser download is not used) and Debian's
chromium at /usr/bin/chromium (tests/setup.sh installs it). One browser process; its contexts are
separate judges.
"""

import shutil

import pandas as pd
import pytest
from judge_fixtures import Server, build_store, run_judge

from raygrid.spec import mlflow as names
from raygrid.judge.agreement import judge_quality
from raygrid.judge.store import JudgementStore
from raygrid.judge.sync import ARTIFACT

pytestmark = pytest.mark.slow

KEYS = {"ArrowLeft": "left", "1": "left", "ArrowRight": "right", "3": "right", "ArrowDown": "same", "2": "same"}
CYCLE = list(KEYS)


def _chromium() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(exe):
        pytest.fail("the judging page test needs Debian's chromium (/usr/bin/chromium): bash tests/setup.sh",
                    pytrace=False)
    return exe


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the judging page test needs playwright: pip install -e '.[test]'", pytrace=False)
    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _ready(page, n, timeout=60_000):
    page.wait_for_function(f"document.getElementById('stage').dataset.ready === '{n}'", timeout=timeout)


def _open(browser, url, judge, errors):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(f"{judge}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{judge}: {e}"))
    page.goto(f"{url}?judge={judge}")
    return ctx, page


def test_judging_with_the_keyboard_restart_two_judges_and_sync(browser, tmp_path):
    store = build_store(tmp_path)
    db = JudgementStore(store.root / "out" / "judge" / store.experiment / "judgements.sqlite")
    errors: list[str] = []
    server = Server(store).start()
    port = server.port
    try:
        ctx_a, ana = _open(browser, server.url, "ana", errors)
        expected = []
        for n in range(1, 11):
            _ready(ana, n)
            key = CYCLE[n % len(CYCLE)]
            ana.keyboard.press(key)
            expected.append(KEYS[key])
        _ready(ana, 11)
        rows = db.frame(judge="ana")
        assert list(rows["choice"]) == expected and rows["id"].is_unique and list(rows["seq"]) == list(range(1, 11))
        assert "10 / 40" in ana.text_content("#progress-text")
        # the 8th comparison repeats an earlier one with the sides swapped
        rep = rows[rows["repeat_of"].notna()]
        assert len(rep) == 1 and int(rep.iloc[0]["seq"]) == 8
        orig = rows.set_index("id").loc[rep.iloc[0]["repeat_of"]]
        assert (orig["left_run"], orig["right_run"], orig["crop_id"]) == (
            rep.iloc[0]["right_run"], rep.iloc[0]["left_run"], rep.iloc[0]["crop_id"])

        # the server goes away; an answer given meanwhile waits in the page and is sent once it is back
        server.stop()
        ana.keyboard.press("ArrowRight")
        ana.wait_for_function("JSON.parse(localStorage.getItem('raygrid-judge-pending') || '[]').length === 1")
        ana.wait_for_function("document.getElementById('status').textContent.includes('unreachable')")
        assert db.count() == 10
        server = Server(store, port=port).start()
        _ready(ana, 12)
        # while the server was down the browser logged the refused connections, and nothing else
        outage = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]
        assert not outage, outage
        errors.clear()
        rows = db.frame(judge="ana")
        assert len(rows) == 11 and rows["id"].is_unique and rows.iloc[-1]["choice"] == "right"
        assert ana.evaluate("localStorage.getItem('raygrid-judge-pending')") == "[]"

        # a new sitting (reload) resumes the judge's progress from the file
        ana.reload()
        _ready(ana, 1)
        assert "11 / 40" in ana.text_content("#progress-text")
        for n in range(1, 10):
            ana.keyboard.press(CYCLE[n % len(CYCLE)])
            _ready(ana, n + 1)
        assert "20 / 40" in ana.text_content("#progress-text")
        rows = db.frame(judge="ana")
        assert len(rows) == 20 and rows["id"].is_unique and rows["sitting"].nunique() == 2

        # two judges at once: keys pressed in both pages without waiting for each other
        ctx_b, ben = _open(browser, server.url, "ben", errors)
        _ready(ben, 1)
        for n in range(1, 11):
            ana.keyboard.press(CYCLE[n % len(CYCLE)])
            ben.keyboard.press(CYCLE[(n + 3) % len(CYCLE)])
            _ready(ana, 10 + n)
            _ready(ben, n + 1)
        ctx_a.close()
        ctx_b.close()
    finally:
        server.stop()
    assert db.integrity() == "ok"
    every = db.frame()
    assert every["id"].is_unique and every.groupby("judge").size().to_dict() == {"ana": 30, "ben": 10}
    assert set(every["left_step"]) == {60} and set(every["source"]) == {"logged"}
    assert (every["left_item"] != every["right_item"]).all()
    assert not errors, errors  # no console error outside the outage
    # keyboard presses come within milliseconds: the judges are flagged as too fast, and kept
    quality = judge_quality(every).set_index("judge")
    assert quality["flag_fast"].all() and quality.loc["ana", "n"] == 30

    res = run_judge(store, "--sync")
    assert res.returncode == 0, res.stderr
    client = names.client(store.uri)
    mirror = pd.read_parquet(client.download_artifacts(store.sweep_run_id, ARTIFACT, str(tmp_path / "dl")))
    assert sorted(mirror["id"]) == sorted(every["id"])
    assert client.get_run(store.sweep_run_id).data.tags["raygrid.judge.judgements"] == "40"
