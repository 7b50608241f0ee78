// The judging page. Answers are queued in localStorage before they are sent, and resent with
// the same id until the server confirms them, so a reload or a server restart loses nothing and
// a resend never duplicates (the server ignores an id it already has).
(function () {
  "use strict";
  const PENDING = "raygrid-judge-pending";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const sitting = uuid();
  let cfg = null, judge = "", seq = 0, current = null, shownAt = null, busy = false, retryTimer = null;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  const pending = () => JSON.parse(localStorage.getItem(PENDING) || "[]");
  const savePending = (list) => localStorage.setItem(PENDING, JSON.stringify(list));
  function status(text) { $("status").textContent = text || ""; }

  function showProgress(p) {
    if (!p) return;
    $("progress").max = p.target; $("progress").value = Math.min(p.mine, p.target);
    $("progress-text").textContent = `${p.mine} / ${p.target}` + (p.mine >= p.target ? " — done, thank you (you may go on)" : "")
      + ` · ${p.total} answers by everyone`;
  }

  // Send every queued answer; true when the queue is empty.
  async function flush() {
    let list = pending();
    while (list.length) {
      const rec = list[0];
      let res;
      try {
        res = await fetch("/api/judgements", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rec) });
      } catch (e) {
        status(`server unreachable — ${list.length} answer(s) kept and resent automatically`);
        return false;
      }
      if (res.ok) { showProgress((await res.json()).progress); }
      else if (res.status >= 500) { status(`server error ${res.status} — retrying`); return false; }
      else { status(`answer refused (${res.status}): ${await res.text()}`); }  // 4xx: never accepted, drop it
      list = pending().filter((r) => r.id !== rec.id);
      savePending(list);
    }
    return true;
  }

  async function next() {
    busy = true; shownAt = null;
    $("stage").classList.add("waiting");
    if (!(await flush())) { scheduleRetry(); return; }
    let data;
    try {
      const res = await fetch(`/api/next?judge=${encodeURIComponent(judge)}`);
      if (!res.ok) { status(`cannot get the next comparison (${res.status}): ${await res.text()}`); scheduleRetry(); return; }
      data = await res.json();
    } catch (e) { status("server unreachable — retrying"); scheduleRetry(); return; }
    status("");
    current = data;
    showProgress(data.progress);
    const imgs = [["reference", data.reference_url], ["left", data.left_url], ["right", data.right_url]];
    await Promise.all(imgs.map(([id, url]) => new Promise((resolve) => {
      const img = $(id);
      img.onload = img.onerror = () => resolve();
      img.src = url;
    })));
    $("stage").classList.remove("waiting");
    $("stage").dataset.ready = String(++seq);
    shownAt = performance.now();
    busy = false;
  }

  function scheduleRetry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(next, 1000);
  }

  function answer(choice) {
    if (busy || !current || shownAt === null) return;
    const rec = { id: uuid(), judge, sitting, seq, crop_id: current.crop_id, left_run: current.left_run,
      right_run: current.right_run, choice, elapsed_ms: Math.round(performance.now() - shownAt), repeat_of: current.repeat_of };
    const list = pending(); list.push(rec); savePending(list);
    next();
  }

  document.addEventListener("keydown", (e) => {
    if ($("stage").hidden || e.target.tagName === "INPUT") return;
    const choice = { ArrowLeft: "left", "1": "left", ArrowRight: "right", "3": "right", ArrowDown: "same", "2": "same" }[e.key];
    if (choice) { e.preventDefault(); answer(choice); }
  });
  document.querySelectorAll("button[data-choice]").forEach((b) => b.addEventListener("click", () => answer(b.dataset.choice)));

  function start(name) {
    judge = name.trim();
    localStorage.setItem("raygrid-judge-name", judge);
    $("judge-label").textContent = `judge: ${judge}`;
    $("name-form").hidden = true; $("stage").hidden = false;
    next();
  }

  $("name-form").addEventListener("submit", (e) => { e.preventDefault(); if ($("name").value.trim()) start($("name").value); });

  (async function init() {
    try { cfg = await (await fetch("/api/config")).json(); }
    catch (e) { status("server unreachable"); setTimeout(init, 1000); return; }
    $("experiment").textContent = `experiment ${cfg.experiment} · ${cfg.settings} settings · ${cfg.crops} crops`;
    const name = params.get("judge") || cfg.judge || localStorage.getItem("raygrid-judge-name") || "";
    if (name) start(name); else { $("name-form").hidden = false; $("name").focus(); }
  })();
})();
