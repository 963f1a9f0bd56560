"""The incident's page: one HTML file that holds everything it shows and loads nothing.

Written to be read at 3 a.m. on a laptop: large type, the verdict first, dark when the
system is, every step with its exact commands; and to be printed (a print stylesheet turns it
into black on white). There is no script; the style is allowed by its hash alone and the
Content-Security-Policy forbids every other load, so even a line that escaped escaping could
fetch nothing and run nothing. Every value from a record goes through
:func:`remediator.report.markup.text`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any, Final

from remediator import __version__
from remediator.causes import Cause, describe
from remediator.events import Event
from remediator.report.incident import Incident, Record, Step
from remediator.report.markup import text as t
from remediator.report.markup import tone
from remediator.report.traffic import Traffic
from remediator.review import probe_said, ts_of
from remediator.timezone import stamp

CSS: Final = """
:root { color-scheme: light dark;
  --bg: #ffffff; --fg: #15171a; --muted: #535a63; --rule: #d5d9de; --panel: #f3f5f7;
  --req: #2563eb; --err: #d62828; --good: #1f7a3a; --bad: #c1121f; --held: #a35c00;
  --would: #2563eb; --span: #d62828; --code: #f3f5f7; }
@media (prefers-color-scheme: dark) { :root {
  --bg: #111418; --fg: #e9ecef; --muted: #a3abb5; --rule: #2e353d; --panel: #1a1f25;
  --req: #6ea8ff; --err: #ff5c5c; --good: #4ade80; --bad: #ff6b6b; --held: #f5b942;
  --would: #6ea8ff; --span: #ff5c5c; --code: #1a1f25; } }
* { box-sizing: border-box; }
html { font-size: 18px; }
body { margin: 0 auto; max-width: 1180px; padding: 1.5rem 1.5rem 4rem; background: var(--bg);
  color: var(--fg); font: 1rem/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 2rem; margin: .2rem 0 .4rem; line-height: 1.2; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .8rem; padding-bottom: .3rem;
  border-bottom: 2px solid var(--rule); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
p { margin: .4rem 0; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .88rem; }
pre { background: var(--code); border: 1px solid var(--rule); border-radius: 6px;
  padding: .6rem .8rem; white-space: pre-wrap; overflow-wrap: anywhere; margin: .5rem 0; }
.kicker { color: var(--muted); text-transform: uppercase; letter-spacing: .06em;
  font-size: .8rem; margin: 0; }
.lede { font-size: 1.2rem; margin: .3rem 0 1rem; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: .05rem .6rem; border-radius: 999px; font-weight: 700;
  font-size: .85rem; vertical-align: middle; border: 2px solid currentColor; }
h1 .badge { font-size: 1.1rem; margin-left: .5rem; }
.good { color: var(--good); } .bad { color: var(--bad); } .held { color: var(--held); }
.would { color: var(--would); } .other { color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem;
  margin: 0; padding: .8rem 1rem; background: var(--panel); border-radius: 8px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.chart { width: 100%; height: auto; display: block; background: var(--panel);
  border-radius: 8px; font-family: system-ui, sans-serif; }
.chart .grid line { stroke: var(--rule); stroke-width: 1; }
.chart .grid .axis { stroke: var(--muted); }
.chart .grid .xtick { stroke: var(--rule); stroke-dasharray: 2 4; }
.chart text { fill: var(--muted); font-size: 14px; }
.chart .ylabel, .chart .yunit, .chart .lane-label { text-anchor: end; }
.chart .xlabel { text-anchor: middle; }
.chart .nodata { text-anchor: middle; font-size: 18px; }
.chart .req-area { fill: var(--req); fill-opacity: .18; stroke: none; }
.chart .req-line { fill: none; stroke: var(--req); stroke-width: 2; }
.chart .err-bar { fill: var(--err); }
.chart .incident-span { fill: var(--span); fill-opacity: .07; }
.chart .incident-marker line { stroke: var(--fg); stroke-width: 1.5; stroke-dasharray: 6 4; }
.chart .incident-marker text { fill: var(--fg); font-weight: 700; }
.chart .lane-bg { fill: var(--rule); fill-opacity: .35; }
.chart .cause-tick { fill: var(--held); }
.chart .notify-marker path { fill: var(--muted); }
.chart .step-line { stroke-width: 2.5; }
.chart .step-num { fill: var(--bg); font-weight: 700; font-size: 13px; text-anchor: middle; }
.chart .step-label { font-weight: 700; font-size: 14px; }
.chart .step-marker .step-line { stroke: var(--muted); }
.chart .step-marker .step-dot { fill: var(--muted); }
.chart .step-marker .step-label { fill: var(--muted); }
.chart .verify-span { fill: var(--good); fill-opacity: .6; }
.chart .step-marker.good .step-line, .chart .step-marker.good .step-dot { stroke: var(--good); fill: var(--good); }
.chart .step-marker.bad .step-line, .chart .step-marker.bad .step-dot { stroke: var(--bad); fill: var(--bad); }
.chart .step-marker.held .step-line, .chart .step-marker.held .step-dot { stroke: var(--held); fill: var(--held); }
.chart .step-marker.would .step-line, .chart .step-marker.would .step-dot { stroke: var(--would); fill: var(--would); }
.chart .step-marker.good .step-label { fill: var(--good); }
.chart .step-marker.bad .step-label { fill: var(--bad); }
.chart .step-marker.held .step-label { fill: var(--held); }
.chart .step-marker.would .step-label { fill: var(--would); }
.legend { display: flex; flex-wrap: wrap; gap: .4rem 1.4rem; margin: .6rem 0; padding: 0;
  list-style: none; color: var(--muted); }
.swatch { display: inline-block; width: 1.1rem; height: .8rem; margin-right: .4rem;
  vertical-align: middle; border-radius: 2px; }
.swatch.req { background: var(--req); } .swatch.err { background: var(--err); }
.swatch.cause { background: var(--held); } .swatch.span { background: var(--span); opacity: .3; }
.swatch.step { background: var(--good); border-radius: 50%; width: .9rem; height: .9rem; }
ol.steps { list-style: none; padding: 0; margin: 0; }
li.step { border-left: 6px solid var(--rule); padding: .5rem 0 .6rem 1rem; margin: 0 0 1rem; }
li.step.good { border-color: var(--good); } li.step.bad { border-color: var(--bad); }
li.step.held { border-color: var(--held); } li.step.would { border-color: var(--would); }
.step-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: .3rem .8rem; }
.step-head .what { font-size: 1.2rem; font-weight: 700; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0; }
th, td { text-align: left; vertical-align: top; padding: .35rem .6rem;
  border-bottom: 1px solid var(--rule); overflow-wrap: break-word; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td.mono, td code { white-space: nowrap; overflow-wrap: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
ol.lines { margin: .3rem 0; padding: .5rem .8rem .5rem 3rem; background: var(--code);
  border: 1px solid var(--rule); border-radius: 6px; }
ol.lines li { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .85rem; white-space: pre-wrap; overflow-wrap: anywhere; padding: .1rem 0; }
ul.plain { padding-left: 1.2rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem;
  border-top: 1px solid var(--rule); padding-top: .8rem; }
@media print {
  :root { --bg: #fff; --fg: #000; --muted: #333; --rule: #bbb; --panel: #fff; --code: #fff;
    --req: #1d4ed8; --err: #b91c1c; --good: #166534; --bad: #b91c1c; --held: #92400e;
    --would: #1d4ed8; --span: #b91c1c; }
  html { font-size: 11pt; }
  body { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  .chart, li.step, table, dl.facts { break-inside: avoid; }
  .chart { border: 1px solid #999; }
  @page { margin: 14mm; }
}
"""

# The policy lets the page's own style in (by its hash) and nothing else: no script, no
# image, no font, no frame, no connection, no form target, no base URL.
_HASH: Final = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{_HASH}'; script-src 'none'; img-src 'none'; "
    "connect-src 'none'; font-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'"
)


def _badge(word: str) -> str:
    return f'<span class="badge {tone(word)}">{t(word.replace("_", " "))}</span>'


def _when(ts: float | None, tz: dt.tzinfo | None, *, date: bool = False) -> str:
    return "?" if ts is None else stamp(ts, tz, millis=not date, date=date)


def _seconds(ms: Any) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return ""
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def html(
    inc: Incident,
    traffic: Traffic,
    chart: str,
    *,
    action_log: str,
    generated: float,
    host: str,
    tz: dt.tzinfo | None = None,
) -> str:
    """The whole page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="color-scheme" content="light dark">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{t(inc.playbook)} {t(inc.outcome)}: incident {t(inc.id)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *_header(inc, tz),
        *_chart_section(traffic, chart),
        *_steps_section(inc, tz),
        *_causes_section(traffic, tz),
        *_guards_section(inc, tz),
        *_evidence_section(inc),
        *_timeline_section(inc, tz),
        "<footer><p>Generated by remediator "
        f"{t(__version__)} on {t(host)} at {t(stamp(generated, tz))} from "
        f"<code>{t(action_log)}</code>. This page is self-contained: it runs no script and "
        "loads nothing (its Content-Security-Policy forbids both). Every log line in it is "
        "shown as text; control characters are written as <code>\\x..</code>.</p></footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _header(inc: Incident, tz: dt.tzinfo | None) -> list[str]:
    closing = inc.closing
    lede = (
        str(closing.get("reason") or "")
        if closing is not None
        else ("still open: the action log has no closing record for it (yet)")
    )
    opened, closed = inc.opened, inc.closed
    took = f" ({closed - opened:.2f} s)" if opened is not None and closed is not None else ""
    opening = inc.opening
    facts = [
        ("Incident", f'<span class="mono">{t(inc.id)}</span>'),
        ("Opened", t(_when(opened, tz, date=True))),
        ("Closed", t(_when(closed, tz, date=True)) + t(took) if closed else "not yet"),
        ("Trigger", t(opening.get("reason") or "?")),
        ("Steps", t(f"{len(inc.steps)}")),
    ]
    if opening.get("manual"):
        facts.append(("By hand", "yes: remediator trigger"))
    if inc.dry_run:
        facts.append(("Dry run", "yes: nothing was changed"))
    summary = closing.get("summary") if closing is not None else None
    out = [
        "<header>",
        '<p class="kicker">remediator incident report</p>',
        f"<h1>{t(inc.playbook)} {_badge(inc.outcome)}</h1>",
        f'<p class="lede">{t(lede)}</p>',
        '<dl class="facts">',
        *(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts),
        "</dl>",
    ]
    if summary:
        out.append(f'<p class="muted">{t(summary)}</p>')
    out.append("</header>")
    return out


def _chart_section(traffic: Traffic, chart: str) -> list[str]:
    per = "second" if traffic.bucket == 1 else f"{traffic.bucket} s, as a rate per second"
    out = [
        '<section id="chart-section">',
        "<h2>What users got</h2>",
        f'<p class="muted">Requests and 5xx answers per {per}; each step at the moment it '
        "acted, its colour its outcome; under the chart, a lane per error cause.</p>",
        chart,
        '<ul class="legend">',
        '<li><span class="swatch req"></span>requests</li>',
        '<li><span class="swatch err"></span>5xx</li>',
        '<li><span class="swatch span"></span>the incident</li>',
        '<li><span class="swatch step"></span>a step (green ok, red failed, amber held)</li>',
        '<li><span class="swatch cause"></span>error-log lines of a cause</li>',
        "</ul>",
    ]
    read = [*traffic.access_read, *traffic.errors_read]
    if traffic.access_from_evidence or traffic.causes_from_evidence:
        out.append(
            '<p class="held">The logs on disk no longer cover this incident: what is charted '
            "comes from the evidence lines it recorded when it opened (its newest 5xx and error "
            "lines), not from every request.</p>"
        )
    if read:
        out.append('<p class="muted">Read from: ' + "; ".join(f"<code>{t(r)}</code>" for r in read))
    for note in traffic.notes:
        out.append(f'<p class="held">{t(note)}</p>')
    out.append("</section>")
    return out


def _steps_section(inc: Incident, tz: dt.tzinfo | None) -> list[str]:
    out = ['<section id="steps-section">', "<h2>What remediator did</h2>"]
    steps = inc.steps
    if not steps:
        out.append("<p>No step ran.</p>")
    out.append('<ol class="steps">')
    out += [line for s in steps for line in _step(s, tz)]
    out.append("</ol>")
    for rec in inc.notifications:
        out.append(
            f"<p>{t(_when(ts_of(rec), tz))}: alerted <strong>{t(rec.get('target'))}</strong> "
            f"{_badge(str(rec.get('outcome') or '?'))} {t(rec.get('reason') or '')}</p>"
        )
    out.append("</section>")
    return out


def _step(step: Step, tz: dt.tzinfo | None) -> list[str]:
    ended = next(
        (r for r in step.records if r.get("event") in (Event.ACTION_RESULT, Event.ACTION_HELD)), {}
    )
    verdict = step.verdict
    head = [
        f'<span class="mono">{t(_when(step.at, tz))}</span>',
        f'<span class="muted">step {step.number}</span>',
        f'<span class="what">{t(step.action)} {t(step.target)}</span>',
        _badge(step.outcome),
    ]
    if verdict != step.outcome:
        head.append(_badge(verdict))
    if ended.get("duration_ms") is not None:
        head.append(f'<span class="muted">{t(_seconds(ended.get("duration_ms")))}</span>')
    out = [
        f'<li class="step {tone(verdict)}" id="step-{step.number}" data-step="{step.number}">',
        f'<div class="step-head">{" ".join(head)}</div>',
        f'<p class="reason">{t(step.reason)}</p>',
    ]
    if step.guard:
        out.append(f'<p class="held">held back by the guard <strong>{t(step.guard)}</strong></p>')
    cmds = step.commands
    if cmds:
        out.append('<pre class="commands"><code>' + "\n".join(t(c) for c in cmds) + "</code></pre>")
    for rec in step.records:
        ev = rec.get("event")
        if ev in (Event.VERIFY_PASSED, Event.VERIFY_FAILED, Event.VERIFY_UNKNOWN):
            on = f" (judged on {rec['judged_on']})" if rec.get("judged_on") else ""
            out.append(
                f'<p class="verify {tone(verdict)}"><strong>{t(verdict.capitalize())}</strong> '
                f"at {t(_when(ts_of(rec), tz))}{t(on)}: {t(rec.get('reason') or '')}</p>"
            )
        elif ev in (Event.ROLLBACK_INTENT, Event.ROLLBACK_RESULT):
            word = (
                "rolling back"
                if ev == Event.ROLLBACK_INTENT
                else f"rolled back: {rec.get('outcome')}"
            )
            out.append(
                f"<p>{t(_when(ts_of(rec), tz))}: {t(word)}: {t(rec.get('reason') or '')}</p>"
            )
    out.append("</li>")
    return out


def _causes_section(traffic: Traffic, tz: dt.tzinfo | None) -> list[str]:
    out = ['<section id="causes-section">', "<h2>Error causes</h2>"]
    if not traffic.causes:
        out += ["<p>No error-log line with a known cause in this time.</p>", "</section>"]
        return out
    out.append(
        "<table><thead><tr><th>cause</th><th>lines</th><th>first</th><th>last</th>"
        "<th>what it means</th></tr></thead><tbody>"
    )
    for cause, counts in sorted(traffic.causes.items(), key=lambda kv: -sum(kv[1])):
        hit = [k for k, n in enumerate(counts) if n]
        first = traffic.start + hit[0] * traffic.bucket
        last = traffic.start + hit[-1] * traffic.bucket
        meaning = describe(Cause(cause)) if cause in Cause.__members__.values() else ""
        out.append(
            f'<tr class="cause-row" data-cause="{t(cause)}"><td><code>{t(cause)}</code></td>'
            f'<td class="num">{sum(counts)}</td>'
            f'<td class="mono">{t(_when(first, tz))}</td><td class="mono">{t(_when(last, tz))}</td>'
            f"<td>{t(meaning)}</td></tr>"
        )
    out += ["</tbody></table>", "</section>"]
    return out


def _guards_section(inc: Incident, tz: dt.tzinfo | None) -> list[str]:
    out = ['<section id="guards-section">', "<h2>Guards and corroboration</h2>"]
    c = inc.opening.get("corroboration")
    if isinstance(c, dict) and c.get("by"):
        out.append(
            "<p>Log lines alone can be forged: before acting, the trigger was corroborated by "
            f"<strong>{t(c['by'])}</strong> (mode {t(c.get('mode') or '?')}).</p>"
        )
    elif isinstance(c, dict):
        out.append(f"<p>Corroboration: {t(c)}</p>")
    else:
        out.append('<p class="muted">No corroboration recorded for this trigger.</p>')
    flap = inc.opening.get("flapping")
    if isinstance(flap, dict):
        out.append(f'<p class="held">Flapping: {t(_pairs(flap))}</p>')
    held = inc.held
    if not held:
        out.append("<p>No guard held anything back.</p>")
    else:
        out.append(
            "<table><thead><tr><th>time</th><th>what</th><th>guard</th><th>why</th></tr>"
            "</thead><tbody>"
        )
        for rec in held:
            what = _held_what(rec)
            out.append(
                f'<tr class="held-row"><td class="mono">{t(_when(ts_of(rec), tz))}</td>'
                f"<td>{t(what)}</td><td>{t(rec.get('guard') or rec.get('outcome') or '')}</td>"
                f"<td>{t(rec.get('reason') or '')}</td></tr>"
            )
        out.append("</tbody></table>")
    for rec in inc.switches:
        who = rec.get("login") or rec.get("by") or ""
        out.append(
            f"<p>{t(_when(ts_of(rec), tz))}: operator {t(str(rec.get('event')).removeprefix('operator_'))}"
            f"{' by ' + t(who) if who else ''}: {t(rec.get('reason') or '')}</p>"
        )
    out.append("</section>")
    return out


def _held_what(rec: Record) -> str:
    ev = str(rec.get("event") or "")
    if ev == Event.TRIGGER_HELD_BACK:
        return f"trigger of {rec.get('playbook')}"
    if ev == Event.BREAKER_OPENED:
        return "breaker opened"
    if rec.get("step") is not None:
        return f"step {rec.get('step')} {rec.get('action') or ''} {rec.get('target') or ''}".strip()
    return ev


def _pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _evidence_section(inc: Incident) -> list[str]:
    ev = inc.evidence
    out = ['<section id="evidence-section">', "<h2>Evidence when it opened</h2>"]
    readings = [r for r in ev.get("readings") or () if isinstance(r, dict)]
    if readings:
        out.append(
            "<table><thead><tr><th>condition</th><th>source</th><th>held</th><th>reading</th>"
            "</tr></thead><tbody>"
        )
        for r in readings:
            rest = {k: v for k, v in r.items() if k not in ("condition", "source", "holds")}
            rest = {k: v for k, v in rest.items() if v is not None}
            held = "yes" if r.get("holds") is True else "no" if r.get("holds") is False else "?"
            out.append(
                f"<tr><td>{t(r.get('condition') or '?')}</td><td>{t(r.get('source') or '')}</td>"
                f"<td>{held}</td><td>{t(_pairs(rest))}</td></tr>"
            )
        out.append("</tbody></table>")
    lines = ev.get("lines")
    for source, got in lines.items() if isinstance(lines, dict) else ():
        if not isinstance(got, list):
            continue
        out.append(f"<h3>{t(source)}: {len(got)} line(s)</h3>")
        out.append(f'<ol class="lines" data-source="{t(source)}">')
        out += [f'<li class="evidence-line">{t(line)}</li>' for line in got]
        out.append("</ol>")
    out += _probes(ev.get("probes"))
    out += _host(ev.get("host"))
    out.append("</section>")
    return out


def _probes(probes: Any) -> list[str]:
    if not isinstance(probes, dict) or not probes:
        return []
    out = ["<h3>Probes</h3>", '<ul class="plain">']
    for name, p in probes.items():
        if not isinstance(p, dict):
            continue
        out.append(f"<li><strong>{t(name)}</strong>: {t(probe_said(p))}</li>")
    out.append("</ul>")
    return out


def _host(host: Any) -> list[str]:
    if not isinstance(host, dict) or not host:
        return []
    bits = []
    load = host.get("load")
    if isinstance(load, list) and load:
        bits.append("load " + " ".join(str(x) for x in load))
    for key, word in (("memory_available", "available"), ("memory_total", "total")):
        if isinstance(host.get(key), int):
            bits.append(f"{host[key] // 2**20} MiB {word}")
    if isinstance(host.get("cpu_count"), int):
        bits.append(f"{host['cpu_count']} CPU(s)")
    if host.get("error"):
        bits.append(f"snapshot failed: {host['error']}")
    return ["<h3>Host</h3>", f"<p>{t(', '.join(bits))}</p>"]


def _timeline_section(inc: Incident, tz: dt.tzinfo | None) -> list[str]:
    recs = sorted([*inc.records, *inc.around], key=lambda r: ts_of(r) or 0.0)
    out = [
        '<section id="timeline-section">',
        "<h2>Every record</h2>",
        '<p class="muted">The action log\'s records of this incident and, around it, of no '
        "incident (held triggers, the operator's switches): <code>remediator log --incident "
        f"{t(inc.id)}</code> prints the same.</p>",
        "<table><thead><tr><th>time</th><th>event</th><th>outcome</th><th>why</th></tr>"
        "</thead><tbody>",
    ]
    out += _rows(recs, tz)
    out += ["</tbody></table>", "</section>"]
    return out


def _rows(recs: Iterable[Record], tz: dt.tzinfo | None) -> list[str]:
    out = []
    for rec in recs:
        step = f" (step {rec['step']})" if rec.get("step") is not None else ""
        out.append(
            f'<tr><td class="mono">{t(_when(ts_of(rec), tz))}</td>'
            f"<td>{t(str(rec.get('event') or '?') + step)}</td>"
            f"<td>{t(rec.get('outcome') or '')}</td><td>{t(rec.get('reason') or '')}</td></tr>"
        )
    return out
