"""The report as one self-contained HTML file: the report data, plotly.min.js inline, a small script that draws it.

No network is needed to open it: plotly's own bundle (shipped in the plotly wheel, the `report`
extra) is embedded as is, and the data as JSON. The page checks itself as it draws: every chart's
trace and point counts and any script error go into ``#bxbatch-check`` (the browser test reads it).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from bxbatch.errors import UsageError
from bxbatch.observe.log import human_duration


def plotly_js() -> str:
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UsageError(
            "the HTML report needs plotly (its bundled plotly.min.js is embedded in the file)",
            hint="pip install 'bxbatch[report]' (or use `bxbatch report --json`)",
        ) from exc


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(data: dict[str, Any]) -> str:
    run = data["run"]
    rows = sum(j["rows"] for j in data["jobs"])
    holds = data["holds"]
    held_s = 0.0
    for h in holds:
        from datetime import datetime

        if h["end"] and h["start"]:
            held_s += (datetime.fromisoformat(h["end"]) - datetime.fromisoformat(h["start"])).total_seconds()
    v = data.get("validation")
    validation = "not run" if v is None else ("passed" if v.get("ok") else f"FAILED ({len(v.get('problems', []))})")
    cards = [
        ("status", run["status"]),
        ("duration", human_duration(run["seconds"])),
        ("rows written", f"{rows:,}"),
        ("throttle held back", f"{human_duration(held_s)} in {len(holds)} holds"),
        ("validation", validation),
        ("host", f"{run['host']} (pid {run['pid']})"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(str(v))}</div></div>'
        for k, v in cards
    )
    phases = _table(
        ["phase", "status", "started", "seconds", "figures"],
        [
            [
                p["name"],
                p["status"],
                (p["start"] or "")[11:19],
                human_duration(p["seconds"]),
                ", ".join(f"{k}={v}" for k, v in p["detail"].items() if k != "seconds" and not isinstance(v, dict)),
            ]
            for p in data["phases"]
        ],
    )
    jobs = _table(
        [
            "job",
            "rows",
            "expected",
            "reconciled",
            "rows/s",
            "chunks",
            "failed",
            "retries",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
        [
            [
                j["job"],
                f"{j['rows']:,}",
                "-" if j["expected"] is None else f"{j['expected']:,}",
                f"{j['reconciled']:,}",
                "-" if j["rows_per_s"] is None else f"{j['rows_per_s']:,.0f}",
                j["chunks"],
                j["failed"],
                j["retries"],
                j["p50_ms"],
                j["p99_ms"],
                j["max_ms"],
            ]
            for j in data["jobs"]
        ],
    )
    archived = ' <span class="tag">archived by a rollback</span>' if data.get("archived") else ""
    error = f'<p class="error">{html.escape(run["error"])}</p>' if run.get("error") else ""
    settings = ", ".join(f"{k}={v}" for k, v in run["settings"].items() if k != "host" and v not in (None, False))
    return (
        f"<h1>bxbatch run #{run['id']}{archived}</h1>"
        f'<p class="sub">{html.escape(run["command"])} on {html.escape(str(run["host"]))}, '
        f"{html.escape((run['start'] or '')[:19].replace('T', ' '))} to "
        f"{html.escape((run['end'] or '')[:19].replace('T', ' '))} (UTC); bxbatch {html.escape(str(run['version']))}; "
        f"{html.escape(settings)}</p>{error}"
        f'<div class="cards">{card_html}</div>'
        f"<h2>Phases</h2>{phases}<h2>Backfill jobs</h2>{jobs}"
    )


def _validation(data: dict[str, Any]) -> str:
    v = data.get("validation")
    if v is None:
        return "<h2>Validation</h2><p>The validate phase has not run for this run.</p>"
    rows = []
    for c in v.get("checks", []):
        problems = c.get("problems") or []
        rows.append([c.get("check", "?"), "ok" if c.get("ok") else "FAILED", len(problems)])
    problems = "".join(
        f"<li>{html.escape(str(p.get('check')))}: {html.escape(str(p.get('object')))}: "
        f"{html.escape(str(p.get('reason')))}</li>"
        for p in v.get("problems", [])[:50]
    )
    verdict = "passed" if v.get("ok") else "failed"
    return (
        f'<h2>Validation: <span class="{verdict}">{verdict}</span></h2>'
        + _table(["check", "result", "problems"], rows)
        + (f"<ul>{problems}</ul>" if problems else "")
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#1d2330;
padding:0 16px}
h1{margin:0 0 4px;font-size:24px}h2{margin:28px 0 8px;font-size:18px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6577;margin:0 0 12px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde2ea;border-radius:8px;padding:8px 14px;min-width:150px;background:#f7f9fc}
.card .k{color:#5b6577;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:18px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e6e9ef;padding:4px 8px;
text-align:left}th{background:#f2f4f8}.chart{height:360px;margin:4px 0 8px}.note{color:#5b6577;font-style:italic}
.tag{font-size:12px;background:#fde8c8;border-radius:4px;padding:2px 6px;vertical-align:middle}
.passed{color:#137333}.failed,.error{color:#b3261e}.explain{color:#5b6577;margin:2px 0 0}
#bxbatch-check{display:none}
"""

# Draws every chart from the embedded data; records what it drew (and any error) in #bxbatch-check.
SCRIPT = r"""
(function () {
  var check = {charts: {}, errors: []};
  var out = document.getElementById('bxbatch-check');
  function save() { out.textContent = JSON.stringify(check); }
  window.addEventListener('error', function (e) { check.errors.push(String(e.message)); save(); });
  var origError = console.error;
  console.error = function () { check.errors.push(Array.prototype.join.call(arguments, ' ')); save();
    origError.apply(console, arguments); };
  var D = JSON.parse(document.getElementById('bxbatch-data').textContent);
  var palette = ['#1f6feb', '#d9480f', '#2b8a3e', '#9c36b5', '#e67700', '#0b7285'];
  var base = {margin: {l: 60, r: 60, t: 30, b: 40}, hovermode: 'closest', legend: {orientation: 'h', y: -0.18},
              font: {family: 'system-ui, sans-serif', size: 12}};
  function lay(extra) { return Object.assign({}, base, extra); }
  function draw(id, traces, layout, note) {
    var el = document.getElementById(id);
    var points = 0;
    traces.forEach(function (t) { points += (t.x || t.y || []).filter(function (v) { return v !== null; }).length; });
    if (!traces.length || points === 0) {
      el.className = 'note'; el.textContent = note; check.charts[id] = {skipped: note}; save(); return;
    }
    Plotly.newPlot(el, traces, layout, {displaylogo: false, responsive: true}).then(function () {
      check.charts[id] = {traces: el.data.length, points: points,
                          drawn: el.querySelectorAll('g.trace, g.boxlayer g.trace, g.barlayer g.trace').length};
      save();
    });
  }
  // 1. throughput per job, throttle holds shaded (hover a shaded band for its reasons)
  var tr = [], ymax = 1;
  Object.keys(D.throughput.series).forEach(function (job, i) {
    var s = D.throughput.series[job];
    s.forEach(function (p) { ymax = Math.max(ymax, p[1]); });
    tr.push({type: 'scatter', mode: 'lines', name: job, line: {color: palette[i % palette.length], width: 1.5},
             x: s.map(function (p) { return p[0]; }), y: s.map(function (p) { return p[1]; }),
             hovertemplate: job + ': %{y:,.0f} rows/s<extra></extra>'});
  });
  var holds = D.holds.slice(0, 150);
  holds.forEach(function (h, i) {
    var top = ymax * 1.05;
    tr.push({type: 'scatter', mode: 'lines', fill: 'toself', hoveron: 'fills', showlegend: i === 0,
             name: 'throttle held back', legendgroup: 'holds', line: {width: 0},
             fillcolor: h.paused ? 'rgba(179,38,30,0.18)' : 'rgba(230,119,0,0.18)',
             x: [h.start, h.start, h.end, h.end, h.start], y: [0, top, top, 0, 0],
             text: (h.paused ? 'paused: ' : 'held back: ') + h.reasons.join('; ') + ' (' + h.host + ':' + h.pid + ')',
             hoverinfo: 'text'});
  });
  draw('chart-throughput', tr, lay({yaxis: {title: 'rows/s (' + D.throughput.bucket_s + ' s buckets)',
       rangemode: 'tozero'}}), 'No chunk was committed in this run.');
  // samples of a process while its throttle was live (the backfill): the charts' time range
  function during(s, key) {
    var keep = s.at.map(function (_, k) { return s[key][k] !== null; });
    var out = {};
    Object.keys(s).forEach(function (f) { out[f] = s[f].filter(function (_, k) { return keep[k]; }); });
    return out;
  }
  // 2. concurrency, chunk scale and duty over time (each process of the run)
  var cc = [];
  Object.keys(D.samples).forEach(function (proc, i) {
    var s = during(D.samples[proc], 'concurrency');
    var sfx = Object.keys(D.samples).length > 1 ? ' ' + proc : '';
    cc.push({type: 'scatter', mode: 'lines', line: {shape: 'hv', color: palette[0]}, name: 'workers allowed' + sfx,
             x: s.at, y: s.concurrency});
    cc.push({type: 'scatter', mode: 'lines', line: {shape: 'hv', dash: 'dot', color: '#868e96'},
             name: 'ceiling' + sfx, x: s.at, y: s.max_concurrency});
    cc.push({type: 'scatter', mode: 'lines', line: {shape: 'hv', color: palette[1]}, name: 'chunk scale' + sfx,
             x: s.at, y: s.chunk_scale, yaxis: 'y2'});
    cc.push({type: 'scatter', mode: 'lines', line: {shape: 'hv', color: palette[2]}, name: 'duty' + sfx,
             x: s.at, y: s.duty, yaxis: 'y2'});
  });
  draw('chart-concurrency', cc, lay({yaxis: {title: 'workers', rangemode: 'tozero', dtick: 1},
       yaxis2: {title: 'chunk scale, duty', overlaying: 'y', side: 'right', range: [0, 1.05]}}),
       'No backfill samples (the backfill did not run in this attempt).');
  // 3. chunk latency distribution per job, against the target
  var lat = [];
  var jobs = D.jobs.filter(function (j) { return D.chunk_durations_ms[j.job]; });
  jobs.forEach(function (j, i) {
    lat.push({type: 'box', name: j.job, y: D.chunk_durations_ms[j.job], boxpoints: false,
              marker: {color: palette[i % palette.length]}, hoverinfo: 'y'});
  });
  if (jobs.length) {
    lat.push({type: 'scatter', mode: 'markers+text', name: 'p99', x: jobs.map(function (j) { return j.job; }),
              y: jobs.map(function (j) { return j.p99_ms; }), marker: {symbol: 'diamond', size: 9, color: '#b3261e'},
              text: jobs.map(function (j) { return 'p99 ' + j.p99_ms; }), textposition: 'middle right'});
    lat.push({type: 'scatter', mode: 'markers+text', name: 'max', x: jobs.map(function (j) { return j.job; }),
              y: jobs.map(function (j) { return j.max_ms; }), marker: {symbol: 'x', size: 9, color: '#1d2330'},
              text: jobs.map(function (j) { return 'max ' + j.max_ms; }), textposition: 'middle right'});
    lat.push({type: 'scatter', mode: 'lines', name: 'target (' + jobs[0].target_ms + ' ms)',
              x: jobs.map(function (j) { return j.job; }), y: jobs.map(function (j) { return j.target_ms; }),
              line: {dash: 'dash', color: '#2b8a3e'}});
  }
  draw('chart-latency', lat, lay({yaxis: {title: 'chunk transaction, ms', type: 'log'}}),
       'No chunk durations recorded.');
  // 4. application probe latency against its baseline
  var pr = [];
  Object.keys(D.samples).forEach(function (proc) {
    var s = during(D.samples[proc], 'probe_ms');
    if (!s.at.length) return;
    pr.push({type: 'scatter', mode: 'lines+markers', marker: {size: 3}, name: 'probe latency ' + proc,
             x: s.at, y: s.probe_ms, line: {color: palette[0]}});
    pr.push({type: 'scatter', mode: 'lines', name: 'baseline (before the run)', x: s.at, y: s.probe_baseline_ms,
             line: {dash: 'dash', color: '#2b8a3e'}});
    pr.push({type: 'scatter', mode: 'lines', name: 'throttle threshold', x: s.at,
             y: s.at.map(function (_, k) { return D.probe_limit_ms; }), line: {dash: 'dot', color: '#b3261e'},
             visible: D.probe_limit_ms ? true : false});
  });
  draw('chart-probe', pr.filter(function (t) { return t.visible !== false; }),
       lay({yaxis: {title: 'ms', rangemode: 'tozero'}}), 'No application probe was configured (--probe-sql).');
  // 5. timeline: phases, index builds, constraint validations
  // phases one row each; the longest index builds and validations one row each, the others on a shared row
  var kinds = {phase: palette[0], index: palette[2], constraint: palette[3]};
  var label = {phase: 'phase', index: 'index', constraint: 'validate'};
  var tl = [], rows = 0, KEEP = 8;
  function ms(t) { return new Date(t.end) - new Date(t.start); }
  ['phase', 'index', 'constraint'].forEach(function (kind) {
    var items = D.timeline.filter(function (t) { return t.kind === kind && t.start && t.end; });
    if (!items.length) return;
    var longest = items.slice().sort(function (a, b) { return ms(b) - ms(a); }).slice(0, kind === 'phase' ? 99 : KEEP);
    var others = items.length - longest.length;
    var rowOf = function (t) {
      return longest.indexOf(t) >= 0 ? label[kind] + ': ' + t.name : others + ' other ' +
             (kind === 'index' ? 'index builds' : 'validations');
    };
    rows += longest.length + (others ? 1 : 0);
    tl.push({type: 'bar', orientation: 'h', name: kind === 'phase' ? 'phases' : kind === 'index' ? 'index builds' :
             'constraint validations', marker: {color: kinds[kind]},
             y: items.map(rowOf),
             base: items.map(function (t) { return t.start; }),
             x: items.map(function (t) { return Math.max(new Date(t.end) - new Date(t.start), 30); }),
             text: items.map(function (t) { return t.name + ' (' + t.status + ') ' +
                   ((new Date(t.end) - new Date(t.start)) / 1000).toFixed(2) + ' s' +
                   (t.detail ? '; ' + t.detail : ''); }),
             hoverinfo: 'text', textposition: 'none'});
  });
  document.getElementById('chart-timeline').style.height = Math.max(300, 24 * rows + 90) + 'px';
  draw('chart-timeline', tl, lay({xaxis: {type: 'date'}, yaxis: {autorange: 'reversed', automargin: true},
       barmode: 'overlay', margin: {l: 260, r: 30, t: 20, b: 40}}), 'No phase recorded.');
  // 6. plan estimate against actual, per phase
  var ev = D.estimate_vs_actual.filter(function (p) { return p.estimate_s !== null || p.actual_s !== null; });
  draw('chart-estimate', ev.length ? [
    {type: 'bar', name: 'plan estimate (at the start)', x: ev.map(function (p) { return p.phase; }),
     y: ev.map(function (p) { return p.estimate_s; }), marker: {color: '#adb5bd'}},
    {type: 'bar', name: 'actual', x: ev.map(function (p) { return p.phase; }),
     y: ev.map(function (p) { return p.actual_s; }), marker: {color: palette[0]}}] : [],
    lay({barmode: 'group', yaxis: {title: 'seconds'}}),
    'No plan estimate was recorded when this run started.');
  check.done = true; save();
})();
"""


def render(data: dict[str, Any]) -> str:
    """The report page: summary tables, six charts, the validation result."""
    payload = dict(data)
    payload["probe_limit_ms"] = _probe_limit(data)
    blob = json.dumps(payload, default=str).replace("</", "<\\/")
    charts = [
        (
            "chart-throughput",
            "Throughput per job",
            "Rows written per second by committed chunks, all processes. "
            "Shaded: the throttle held the run back (orange) or paused it (red); hover a band for the reason.",
        ),
        (
            "chart-concurrency",
            "Concurrency and chunk size",
            "Workers the throttle allowed against the ceiling; the "
            "chunk-size multiplier and the duty (share of time in chunks) it applied.",
        ),
        (
            "chart-latency",
            "Chunk latency per job",
            "Distribution of chunk transaction times (box: quartiles), p99 and max, against the target chunk duration.",
        ),
        (
            "chart-probe",
            "Application probe latency",
            "The probe query's latency during the run, against its "
            "baseline measured before the run and the throttle's threshold.",
        ),
        (
            "chart-timeline",
            "Timeline",
            "Phases, index builds and constraint validations (the longest on rows of "
            "their own, the others on a shared row); hover a bar for its name and duration.",
        ),
        (
            "chart-estimate",
            "Plan estimate against actual",
            "The estimate of bxbatch plan taken when the run started, per phase, against the time each phase took.",
        ),
    ]
    sections = "".join(
        f'<h2>{html.escape(title)}</h2><p class="explain">{html.escape(text)}</p><div class="chart" id="{cid}"></div>'
        for cid, title, text in charts
    )
    title = f"bxbatch run #{data['run']['id']} report"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>'
        f"<script>{plotly_js()}</script></head><body>"
        f"{_summary(data)}{sections}{_validation(data)}"
        f'<pre id="bxbatch-check"></pre>'
        f'<script type="application/json" id="bxbatch-data">{blob}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def _probe_limit(data: dict[str, Any]) -> float | None:
    """The probe's throttle threshold (engine/health.probe_limit_ms) from its baseline and the run's settings."""
    settings = data["run"]["settings"]
    baselines = [b for proc in data["samples"].values() for b in proc.get("probe_baseline_ms", []) if b is not None]
    if not baselines:
        return None
    base = float(baselines[-1])
    return round(
        max(base * float(settings.get("probe_max_ratio") or 2.0), base + float(settings.get("probe_min_ms") or 5.0)), 3
    )
