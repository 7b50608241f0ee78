// raygrid crop viewer: renders every .rgv root of the page from its embedded JSON.
// Standard DOM and canvas only (Chromium, Firefox). The error map is computed here from the two
// embedded images: |SR - HR| averaged over R, G, B, times the gain, through a small colour map.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var LUT = (function () { // black -> purple -> orange -> pale yellow, 256 RGB entries
    var stops = [[0, 0, 0, 4], [0.3, 87, 16, 110], [0.6, 212, 72, 66], [0.85, 250, 165, 10], [1, 252, 255, 164]];
    var lut = new Uint8ClampedArray(256 * 3);
    for (var i = 0; i < 256; i++) {
      var t = i / 255, k = 1;
      while (k < stops.length - 1 && stops[k][0] < t) k++;
      var a = stops[k - 1], b = stops[k], f = (t - a[0]) / (b[0] - a[0]);
      for (var c = 0; c < 3; c++) lut[i * 3 + c] = a[c + 1] + f * (b[c + 1] - a[c + 1]);
    }
    return lut;
  })();

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (x) { if (x) e.appendChild(x); });
    return e;
  }
  function select(cls, options, value) {
    var s = el("select", {cls: cls});
    options.forEach(function (o) {
      var opt = el("option", {value: o[0], text: o[1]});
      if (String(o[0]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    return s;
  }
  function labelled(text, control) { return el("label", {}, [document.createTextNode(text + " "), control]); }

  var decoded = new Map(), diffs = new Map();
  function load(uri) {
    if (!decoded.has(uri)) {
      var img = new Image();
      img.src = uri;
      decoded.set(uri, img.decode().then(function () { return img; }));
    }
    return decoded.get(uri);
  }
  function pixels(img, w, h) {
    var c = document.createElement("canvas");
    c.width = w; c.height = h;
    var g = c.getContext("2d");
    g.drawImage(img, 0, 0, w, h);
    return g.getImageData(0, 0, w, h).data;
  }
  function diff(uri, hrUri) { // mean |a - b| over R, G, B per pixel, at the HR size
    var key = uri + "|" + hrUri;
    if (!diffs.has(key)) {
      diffs.set(key, Promise.all([load(uri), load(hrUri)]).then(function (imgs) {
        var w = imgs[1].naturalWidth, h = imgs[1].naturalHeight;
        var a = pixels(imgs[0], w, h), b = pixels(imgs[1], w, h), d = new Float32Array(w * h);
        for (var i = 0; i < w * h; i++) {
          d[i] = (Math.abs(a[4 * i] - b[4 * i]) + Math.abs(a[4 * i + 1] - b[4 * i + 1]) + Math.abs(a[4 * i + 2] - b[4 * i + 2])) / 3;
        }
        return {w: w, h: h, d: d};
      }));
    }
    return diffs.get(key);
  }
  function drawError(canvas, uri, hrUri, gain) {
    return diff(uri, hrUri).then(function (m) {
      canvas.width = m.w; canvas.height = m.h;
      var g = canvas.getContext("2d"), out = g.createImageData(m.w, m.h);
      for (var i = 0; i < m.w * m.h; i++) {
        var v = Math.min(255, Math.round(m.d[i] * gain));
        out.data[4 * i] = LUT[3 * v]; out.data[4 * i + 1] = LUT[3 * v + 1]; out.data[4 * i + 2] = LUT[3 * v + 2];
        out.data[4 * i + 3] = 255;
      }
      g.putImageData(out, 0, 0);
    });
  }

  function Viewer(root) {
    var data = JSON.parse(root.querySelector("script.rgv-data").textContent);
    var axes = Object.keys(data.axes), size0 = data.crops.length ? data.crops[0].size : 64;
    var st = {crop: 0, step: data.steps.length - 1, rows: data.rows, cols: data.cols.slice(), filters: {},
              error: false, gain: 4, health: true, scale: "shared", zoom: Math.max(1, Math.round(160 / size0))};
    var renders = 0, pending = [];
    var controls = el("div", {cls: "rgv-controls"}), grid = el("div", {cls: "rgv-gridwrap"});
    var notes = el("ul", {cls: "rgv-notes"}), modal = el("div", {cls: "rgv-modal", hidden: ""});
    root.appendChild(controls); root.appendChild(notes); root.appendChild(grid); root.appendChild(modal);
    var enc = data.encoding;
    (data.notes || []).concat([enc.format === "webp"
      ? "Images as WebP (SR and bicubic at quality " + enc.quality + ", HR lossless): the encoding alone changes a pixel by " + enc.floor + " levels (of 255) on average in the worst image, and the error map shows that too; the PSNR beside each crop is computed from the PNGs as logged."
      : "Images as logged (PNG)."]).forEach(function (n) { notes.appendChild(el("li", {text: n})); });

    function crop() { return data.crops[st.crop]; }
    function stepValue() { return data.steps[st.step]; }
    function imageAt(run) { // the image at the step, else the latest earlier one (a run stopped early)
      var byStep = (run.sr || {})[crop().id] || {}, want = stepValue(), best = null;
      Object.keys(byStep).map(Number).sort(function (a, b) { return a - b; }).forEach(function (s) {
        if (s <= want || best === null) best = s;
      });
      return best === null ? null : {step: best, uri: byStep[String(best)], psnr: ((run.psnr || {})[crop().id] || {})[String(best)]};
    }
    function visible() {
      return data.runs.filter(function (r) {
        return Object.keys(st.filters).every(function (a) { return st.filters[a] === "*" || r.point[a] === st.filters[a]; });
      });
    }
    function order(axis, level) { return data.axes[axis].indexOf(level); }

    function buildControls() {
      controls.textContent = "";
      var cs = select("rgv-crop", data.crops.map(function (c, i) { return [i, c.id + " · " + c.kind + " · " + c.image]; }), st.crop);
      cs.onchange = function () { st.crop = +cs.value; render(); };
      controls.appendChild(labelled("crop", cs));
      var slider = el("input", {cls: "rgv-step", type: "range", min: 0, max: data.steps.length - 1, value: st.step});
      var sl = el("span", {cls: "rgv-step-label", text: "step " + stepValue()});
      slider.oninput = function () { st.step = +slider.value; sl.textContent = "step " + stepValue(); render(); };
      if (data.steps.length < 2) slider.hidden = true;
      controls.appendChild(el("label", {}, [slider, sl]));
      var axisOpts = axes.map(function (a) { return [a, a]; });
      var rs = select("rgv-rows", axisOpts, st.rows);
      var c1 = select("rgv-col1", axisOpts, st.cols[0]);
      var c2 = select("rgv-col2", [["", "—"]].concat(axisOpts), st.cols[1] || "");
      function slice() {
        var cols = [c1.value].concat(c2.value && c2.value !== c1.value ? [c2.value] : []);
        st.rows = rs.value;
        st.cols = cols.filter(function (c) { return c !== st.rows; });
        if (!st.cols.length) st.cols = [axes.filter(function (a) { return a !== st.rows; })[0] || st.rows];
        buildControls(); render();
      }
      rs.onchange = c1.onchange = c2.onchange = slice;
      controls.appendChild(labelled("rows", rs));
      controls.appendChild(labelled("columns", c1));
      controls.appendChild(labelled("×", c2));
      axes.forEach(function (a) { // every other axis with several levels filters the runs
        if (a === st.rows || st.cols.indexOf(a) >= 0 || data.axes[a].length < 2) { delete st.filters[a]; return; }
        if (!(a in st.filters)) st.filters[a] = "*";
        var f = select("rgv-filter", [["*", "all"]].concat(data.axes[a].map(function (l) { return [l, l]; })), st.filters[a]);
        f.setAttribute("data-axis", a);
        f.onchange = function () { st.filters[a] = f.value; render(); };
        controls.appendChild(labelled(a, f));
      });
      var err = el("input", {cls: "rgv-err", type: "checkbox"});
      err.checked = st.error;
      err.onchange = function () { st.error = err.checked; render(); };
      var gain = select("rgv-gain", [[1, "×1"], [2, "×2"], [4, "×4"], [8, "×8"], [16, "×16"]], st.gain);
      gain.onchange = function () { st.gain = +gain.value; render(); };
      controls.appendChild(el("label", {}, [err, document.createTextNode(" error |SR − HR| "), gain]));
      var hl = el("input", {cls: "rgv-health", type: "checkbox"});
      hl.checked = st.health;
      hl.onchange = function () { st.health = hl.checked; render(); };
      var sc = select("rgv-scale", [["shared", "shared scale"], ["own", "own scale"]], st.scale);
      sc.onchange = function () { st.scale = sc.value; render(); };
      controls.appendChild(el("label", {}, [hl, document.createTextNode(" health "), sc]));
      var zm = select("rgv-zoom", [[1, "1×"], [2, "2×"], [3, "3×"], [4, "4×"]], st.zoom);
      zm.onchange = function () { st.zoom = +zm.value; render(); };
      controls.appendChild(labelled("zoom", zm));
    }

    function picture(uri, kind, run, px) { // an <img>, or the error map canvas when the toggle is on
      var hrUri = crop().hr, node;
      if (st.error && kind !== "hr") {
        node = el("canvas", {cls: "rgv-img rgv-errmap"});
        pending.push(drawError(node, uri, hrUri, st.gain));
      } else {
        node = el("img", {cls: "rgv-img", src: uri, alt: kind + " " + crop().id});
      }
      node.style.width = px + "px"; node.style.height = px + "px";
      node.setAttribute("data-kind", kind);
      if (run) node.setAttribute("data-run", run.id);
      node.onclick = function () { enlarge(kind, run); };
      return node;
    }

    function healthRanges(runs) {
      var r = {};
      runs.forEach(function (run) {
        Object.keys(run.health || {}).forEach(function (k) {
          run.health[k].forEach(function (p) {
            if (p[1] === null) return;
            r[k] = r[k] || [Infinity, -Infinity];
            r[k][0] = Math.min(r[k][0], p[1]); r[k][1] = Math.max(r[k][1], p[1]);
          });
        });
      });
      return r;
    }
    function spark(series, range, s0, s1, name) {
      var W = 84, H = 16, svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("class", "rgv-sparkline");
      var lo = range ? range[0] : Infinity, hi = range ? range[1] : -Infinity;
      if (!range) series.forEach(function (p) { if (p[1] !== null) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); } });
      function x(s) { return s1 > s0 ? 1 + (W - 2) * (s - s0) / (s1 - s0) : W / 2; }
      function y(v) { return hi > lo ? H - 2 - (H - 4) * (v - lo) / (hi - lo) : H / 2; }
      var pts = [], segs = [];
      series.forEach(function (p) { if (p[1] === null) { segs.push(pts); pts = []; } else pts.push(x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)); });
      segs.push(pts);
      segs.forEach(function (s) {
        if (!s.length) return;
        var pl = document.createElementNS(SVG, s.length > 1 ? "polyline" : "circle");
        if (s.length > 1) pl.setAttribute("points", s.join(" "));
        else { var xy = s[0].split(","); pl.setAttribute("cx", xy[0]); pl.setAttribute("cy", xy[1]); pl.setAttribute("r", 1.5); }
        svg.appendChild(pl);
      });
      var cur = document.createElementNS(SVG, "line"), at = x(stepValue());
      cur.setAttribute("x1", at); cur.setAttribute("x2", at); cur.setAttribute("y1", 0); cur.setAttribute("y2", H);
      cur.setAttribute("class", "rgv-cursor");
      svg.appendChild(cur);
      var now = null;
      series.forEach(function (p) { if (p[0] <= stepValue()) now = p[1]; });
      var title = document.createElementNS(SVG, "title");
      title.textContent = name + " at step " + stepValue() + ": " + (now === null ? "—" : now.toPrecision(4)) +
        " (range " + (isFinite(lo) ? lo.toPrecision(3) + " … " + hi.toPrecision(3) : "—") + ", " + (range ? "shared" : "own") + " scale)";
      svg.appendChild(title);
      return svg;
    }

    function runBlock(run, runs, extra, ranges, s0, s1) {
      var img = imageAt(run), px = crop().size * st.zoom, box = el("div", {cls: "rgv-imgbox"}), cap = el("div", {cls: "rgv-cap"});
      if (img) {
        box.appendChild(picture(img.uri, "sr", run, px));
        if (img.step !== stepValue()) cap.appendChild(el("span", {cls: "rgv-badge rgv-offstep", text: "step " + img.step}));
        if (img.psnr !== null && img.psnr !== undefined) cap.appendChild(el("span", {text: img.psnr.toFixed(2) + " dB"}));
      } else {
        box.appendChild(el("div", {cls: "rgv-missing", text: "no image"}));
        box.lastChild.style.width = px + "px"; box.lastChild.style.height = px + "px";
      }
      var status = run.outcome || (run.status === "RUNNING" ? "running" : null);
      if (status && status !== "finished") {
        var badge = el("span", {cls: "rgv-badge rgv-outcome rgv-" + status, text: status + (run.outcome_step ? " at " + run.outcome_step : "")});
        if (run.outcome_reason) badge.title = run.outcome_reason;
        cap.appendChild(badge);
      }
      if (extra.length) cap.appendChild(el("span", {text: extra.map(function (a) { return a + "=" + run.point[a]; }).join(" ")}));
      var block = el("div", {cls: "rgv-run", "data-run": run.id, title: (run.name || run.id) + "\n" + JSON.stringify(run.point)}, [box, cap]);
      if (st.health) {
        var names = Object.keys(run.health || {}).sort(), hb = el("div", {cls: "rgv-spark"});
        names.forEach(function (k) {
          hb.appendChild(el("span", {cls: "rgv-spark-name", text: k.replace(/^health\//, ""), title: k}));
          hb.appendChild(spark(run.health[k], st.scale === "shared" ? ranges[k] : null, s0, s1, k));
        });
        if (names.length) block.appendChild(hb);
      }
      return block;
    }

    function render() {
      pending = [];
      var runs = visible(), c = crop(), px = c.size * st.zoom;
      var rowLevels = data.axes[st.rows].filter(function (l) { return runs.some(function (r) { return r.point[st.rows] === l; }); });
      var combos = [], seen = {};
      runs.forEach(function (r) {
        var combo = st.cols.map(function (a) { return r.point[a]; }), key = JSON.stringify(combo);
        if (!seen[key]) { seen[key] = true; combos.push(combo); }
      });
      combos.sort(function (a, b) {
        for (var i = 0; i < st.cols.length; i++) { var d = order(st.cols[i], a[i]) - order(st.cols[i], b[i]); if (d) return d; }
        return 0;
      });
      var extra = axes.filter(function (a) { return a !== st.rows && st.cols.indexOf(a) < 0 && data.axes[a].length > 1 && st.filters[a] === "*"; });
      var ranges = healthRanges(runs), hs = [];
      runs.forEach(function (r) { Object.keys(r.health || {}).forEach(function (k) { r.health[k].forEach(function (p) { hs.push(p[0]); }); }); });
      var allSteps = hs.concat(data.steps), s0 = Math.min.apply(null, allSteps), s1 = Math.max.apply(null, allSteps);
      var table = el("table", {cls: "rgv-grid"}), head = el("tr");
      head.appendChild(el("th", {cls: "rgv-corner"}, [el("div", {text: "rows: " + st.rows}), el("div", {text: "columns: " + st.cols.join(" × ")})]));
      head.appendChild(el("th", {text: "HR"}));
      head.appendChild(el("th", {text: "bicubic"}));
      combos.forEach(function (combo) {
        var th = el("th", {cls: "rgv-colhead"});
        combo.forEach(function (l, i) { th.appendChild(el("div", {text: st.cols[i] + " = " + l})); });
        head.appendChild(th);
      });
      table.appendChild(el("thead", {}, [head]));
      var body = el("tbody");
      rowLevels.forEach(function (level, ri) {
        var tr = el("tr", {}, [el("th", {cls: "rgv-rowhead", text: level})]);
        if (ri === 0) {
          [["hr", c.hr, "HR"], ["bicubic", c.bicubic, c.bicubic_psnr ? c.bicubic_psnr.toFixed(2) + " dB" : "bicubic"]].forEach(function (ref) {
            var td = el("td", {cls: "rgv-ref", rowspan: rowLevels.length});
            td.appendChild(el("div", {cls: "rgv-imgbox"}, [picture(ref[1], ref[0], null, px)]));
            td.appendChild(el("div", {cls: "rgv-cap", text: ref[2]}));
            tr.appendChild(td);
          });
        }
        combos.forEach(function (combo) {
          var td = el("td", {cls: "rgv-cell"}), here = runs.filter(function (r) {
            return r.point[st.rows] === level && st.cols.every(function (a, i) { return r.point[a] === combo[i]; });
          });
          if (here.length > 1) { // several runs (seeds) in one cell: how many ended how
            var counts = {};
            here.forEach(function (r) { var o = r.outcome || r.status.toLowerCase(); counts[o] = (counts[o] || 0) + 1; });
            td.appendChild(el("div", {cls: "rgv-counts", text: here.length + " runs: " + Object.keys(counts).sort(function (a, b) { return (a !== "finished") - (b !== "finished") || (a < b ? -1 : a > b); }).map(function (o) { return counts[o] + " " + o; }).join(", ")}));
          }
          here.forEach(function (r) { td.appendChild(runBlock(r, runs, extra, ranges, s0, s1)); });
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      table.appendChild(body);
      grid.textContent = "";
      grid.appendChild(el("p", {cls: "rgv-where", text: "crop " + c.id + " (" + c.kind + ", " + c.set + "/" + c.image + "), step " + stepValue() + " · " + runs.length + " runs"}));
      grid.appendChild(table);
      var n = ++renders;
      Promise.all(pending).then(function () { if (n === renders) root.setAttribute("data-ready", String(n)); },
        function (e) { root.setAttribute("data-error", String(e)); throw e; });
    }

    function enlarge(kind, run) {
      modal.textContent = "";
      var c = crop(), panels = [["bicubic", c.bicubic, "bicubic"]];
      var img = run ? imageAt(run) : null;
      if (img) panels.push(["sr", img.uri, "SR · step " + img.step]);
      panels.push(["hr", c.hr, "HR"]);
      var zoom = Math.max(2, Math.floor(Math.min(window.innerWidth / (panels.length * 1.15), window.innerHeight * 0.75) / c.size));
      var row = el("div", {cls: "rgv-modal-row"});
      panels.forEach(function (p) {
        var node = picture(p[1], p[0], run, c.size * zoom);
        node.onclick = null;
        row.appendChild(el("figure", {}, [node, el("figcaption", {text: p[2]})]));
      });
      var close = el("button", {cls: "rgv-close", type: "button", text: "×"});
      var title = run ? (run.name || run.id) + " — " + Object.keys(run.point).map(function (a) { return a + "=" + run.point[a]; }).join(", ") : "crop " + c.id;
      modal.appendChild(el("div", {cls: "rgv-modal-box"}, [close, el("p", {cls: "rgv-modal-title", text: title}), row]));
      modal.hidden = false;
      var n = ++renders;
      Promise.all(pending).then(function () { if (n === renders) root.setAttribute("data-ready", String(n)); });
      close.onclick = function () { modal.hidden = true; };
    }
    modal.addEventListener("click", function (e) { if (e.target === modal) modal.hidden = true; });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") modal.hidden = true; });
    buildControls();
    render();
  }

  Array.prototype.forEach.call(document.querySelectorAll(".rgv"), function (root) {
    if (root.getAttribute("data-init")) return;
    root.setAttribute("data-init", "1");
    try { Viewer(root); } catch (e) { root.setAttribute("data-error", String(e)); throw e; }
  });
})();
