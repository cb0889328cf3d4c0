// The dashboard's charts: data from /dashboard/data.json, drawn with uPlot, every 5 s.
(function () {
  "use strict";
  const COLORS = {
    broadcasts: "#3451d1", opens: "#13795b", clicks: "#8a4fd8", short_links: "#c05bb0",
    bounces: "#b4232c", complaints: "#e0701b", unsubscribes: "#9a5b00", conversions: "#1a9bb5",
  };
  const charts = {};
  // The backlog as this page saw it, one sample per refresh: an outage shorter than
  // a chart interval still shows as it grows and drains.
  const live = { t: [], pending: [] };

  function fmtCount(n) { return n == null ? "–" : Math.round(n).toLocaleString(); }
  function fmtAge(s) {
    if (s == null) return "nothing";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function fmtSeconds(s) {
    if (s == null) return "–";
    if (s < 1) return Math.round(s * 1000) + " ms";
    return fmtAge(s);
  }
  function setKpi(id, text, level) {
    const el = document.getElementById(id);
    el.querySelector(".value").textContent = text;
    el.classList.remove("bad", "warn", "good");
    if (level) el.classList.add(level);
  }
  function lastValue(list) {
    for (let i = list.length - 1; i >= 0; i--) if (list[i] != null) return list[i];
    return null;
  }

  function sizeOf(el) { return { width: Math.max(el.clientWidth, 300), height: 240 }; }

  function draw(id, opts, data) {
    const el = document.getElementById(id);
    if (charts[id] && charts[id].series.length === opts.series.length) {
      charts[id].setData(data);
      return;
    }
    if (charts[id]) charts[id].destroy();
    el.textContent = "";
    charts[id] = new uPlot(Object.assign(sizeOf(el), opts), data, el);
  }

  function area(color) { return { stroke: color, fill: color + "22", width: 2, points: { show: false } }; }
  function bars(color) {
    return { stroke: color, fill: color + "aa", width: 1, paths: uPlot.paths.bars({ size: [0.7, 40] }), points: { show: false } };
  }
  function noZero(list) { return list.map(v => (v ? v : null)); }

  // History (bucket ends) and live samples on one time axis; gaps bridged.
  function backlogData(s) {
    const step = s.step_s, rows = new Map();
    s.t.forEach((t, i) => rows.set(t + step, [s.backlog[i], null]));
    live.t.forEach((t, i) => {
      const row = rows.get(t) || [null, null];
      row[1] = live.pending[i];
      rows.set(t, row);
    });
    const times = Array.from(rows.keys()).sort((a, b) => a - b);
    return [times, times.map(t => rows.get(t)[0]), times.map(t => rows.get(t)[1])];
  }

  function render(doc) {
    const s = doc.series, f = doc.figures, t = s.t;
    setKpi("kpi-pending", fmtCount(f.pending), f.pending > 0 && f.oldest_pending_age_s > 300 ? "warn" : null);
    setKpi("kpi-age", fmtAge(f.oldest_pending_age_s), f.oldest_pending_age_s > 3600 ? "bad" : (f.oldest_pending_age_s > 300 ? "warn" : null));
    const rate = f.success_rate_24h;
    setKpi("kpi-rate", rate == null ? "–" : (rate * 100).toFixed(1) + " %", rate == null ? null : (rate >= 0.99 ? "good" : (rate >= 0.9 ? "warn" : "bad")));
    setKpi("kpi-latency", fmtSeconds(lastValue(s.latency_p95_s)), null);
    setKpi("kpi-dead", fmtCount(f.dead), f.dead > 0 ? "bad" : "good");

    const warnings = document.getElementById("warnings");
    warnings.textContent = "";
    const list = f.warnings;
    for (const w of list) {
      const div = document.createElement("div");
      div.className = "banner " + w.level;
      div.setAttribute("role", w.level === "bad" ? "alert" : "status");
      const title = document.createElement("strong");
      title.textContent = w.title;
      div.append(title, document.createTextNode(w.text));
      warnings.append(div);
    }
    if (!list.length && doc.tiles.length) {
      const ok = document.createElement("div");
      ok.className = "banner ok";
      ok.textContent = f.pending ? "Events are flowing; " + fmtCount(f.pending) + " on their way." : "All caught up: nothing waits.";
      warnings.append(ok);
    }
    for (const tile of doc.tiles) {
      const el = document.querySelector('[data-tile="' + tile.id + '"] [data-field="pending"]');
      if (el) el.textContent = fmtCount(tile.pending);
      const dot = document.querySelector('[data-tile="' + tile.id + '"] .dot');
      if (dot) dot.className = "dot " + (tile.failing ? "failing" : tile.state);
    }
    live.t.push(doc.now);
    live.pending.push(f.pending);
    if (live.t.length > 720) { live.t.shift(); live.pending.shift(); }

    const axes = [{}, { size: 56 }];
    draw("chart-backlog", {
      series: [{}, Object.assign({ label: "waiting", spanGaps: true }, area("#e0701b")),
        { label: "live", stroke: "#b4232c", width: 2, spanGaps: true, points: { show: true, size: 5 } }],
      axes,
    }, backlogData(s));

    draw("chart-delivery", {
      series: [{}, Object.assign({ label: "delivered" }, bars("#13795b")), Object.assign({ label: "failed" }, bars("#b4232c")),
        { label: "success %", stroke: "#3451d1", width: 2, scale: "%", value: (u, v) => v == null ? "–" : v.toFixed(1) + " %" }],
      scales: { "%": { range: [0, 100] } },
      axes: [{}, { size: 56 }, { scale: "%", side: 1, grid: { show: false }, values: (u, vs) => vs.map(v => v + " %") }],
    }, [t, noZero(s.delivered), noZero(s.failed), s.success_rate.map(v => v == null ? null : v * 100)]);

    const shown = DASH.metrics.filter(m => s.recorded[m] && s.recorded[m].some(v => v > 0));
    const metrics = shown.length ? shown : ["opens"];
    draw("chart-events", {
      series: [{}].concat(metrics.map(m => ({ label: m, stroke: COLORS[m] || "#555", width: 2, points: { show: false } }))),
      axes,
    }, [t].concat(metrics.map(m => s.recorded[m] || t.map(() => 0))));

    draw("chart-latency", {
      series: [{},
        { label: "p50", stroke: "#13795b", width: 2, spanGaps: true, points: { show: true, size: 6 }, value: (u, v) => fmtSeconds(v) },
        { label: "p95", stroke: "#e0701b", width: 2, spanGaps: true, points: { show: true, size: 6 }, value: (u, v) => fmtSeconds(v) },
        { label: "p99", stroke: "#b4232c", width: 2, spanGaps: true, points: { show: true, size: 6 }, value: (u, v) => fmtSeconds(v) }],
      scales: { y: { distr: 3 } },
      axes: [{}, { size: 64, values: (u, vs) => vs.map(v => (v == null ? "" : fmtSeconds(v))) }],
    }, [t, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s]);

    document.getElementById("updated").textContent =
      "Updated " + new Date(doc.now * 1000).toLocaleTimeString() + " · refreshes every " + DASH.refresh_s + " s";
  }

  async function refresh() {
    const url = "/dashboard/data.json?installation=" + encodeURIComponent(DASH.installation) + "&range=" + encodeURIComponent(DASH.range);
    try {
      const answer = await fetch(url, { headers: { Accept: "application/json" } });
      if (answer.redirected || !answer.ok) throw new Error("HTTP " + answer.status);
      render(await answer.json());
    } catch (err) {
      document.getElementById("updated").textContent = "Could not refresh (" + err.message + "); trying again.";
    }
  }

  window.addEventListener("resize", () => {
    for (const id in charts) charts[id].setSize(sizeOf(document.getElementById(id)));
  });
  refresh();
  setInterval(refresh, DASH.refresh_s * 1000);
})();
