"""The incident's chart: requests and 5xx per second, each step where it happened, and a lane
per error cause underneath, as inline SVG written here.

Why SVG from Python, and no chart library: the page must load nothing (it is mailed, copied
to a laptop, opened offline; its Content-Security-Policy forbids every load). Debian packages
Chart.js and d3 (``libjs-chart.js``, ``libjs-d3``), but a page cannot count on
``/usr/share/javascript`` where it is opened, so the library would be inlined into every
page: copied, some hundreds of kilobytes, and the policy would have to let script run next to
outside text. What the page shows is a few hundred rectangles, lines and labels; written here
it is plain markup with no script at all, reads the same in any browser, prints sharp at any
size, and takes the page's CSS (dark or light, screen or paper). Hover text is SVG's own
``<title>``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Final

from remediator.report.incident import Incident, Step
from remediator.report.markup import text as t
from remediator.report.markup import tone
from remediator.report.traffic import Traffic
from remediator.review import ts_of

W: Final = 1000.0
LEFT: Final = 170.0  # the y axis's numbers and the cause lanes' names
RIGHT: Final = 24.0
ROW: Final = 24.0  # a row of step labels above the plot
ROWS: Final = 3
PLOT: Final = 300.0  # the plot's height
LANE: Final = 26.0
_TICKS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
_CHAR: Final = 7.6  # the width of a label character, roughly, at the label's size


class _Frame:
    """Where things go: times to x, rates to y."""

    def __init__(self, traffic: Traffic, lanes: int, ymax: float) -> None:
        self.start, self.end = traffic.start, traffic.end
        self.top = 16.0 + ROWS * ROW
        self.base = self.top + PLOT
        self.lanes_top = self.base + 14.0
        self.bottom = self.lanes_top + lanes * LANE + (4.0 if lanes else 0.0)
        self.height = self.bottom + 34.0
        self.ymax = ymax

    def x(self, when: float) -> float:
        span = (self.end - self.start) or 1.0
        return LEFT + (when - self.start) / span * (W - LEFT - RIGHT)

    def y(self, rate: float) -> float:
        return self.base - rate / self.ymax * PLOT


def nice(value: float) -> float:
    """The top of the y axis: four grid steps of 1, 2 or 5 x 10^k, the smallest that holds
    ``value`` (4 for nothing, or for less: a rate below one a second reads as a fraction)."""
    if value <= 4:
        return 4.0
    step = value / 4
    p = 10.0 ** math.floor(math.log10(step))
    return 4.0 * next(m * p for m in (1.0, 2.0, 5.0, 10.0) if m * p >= step)


def svg(traffic: Traffic, inc: Incident, tz: dt.tzinfo | None = None) -> str:
    """The chart of ``inc`` over ``traffic``'s window, in ``tz`` (None: this machine's)."""
    b = traffic.bucket
    rates = [n / b for n in traffic.requests]
    causes = sorted(traffic.causes.items(), key=lambda kv: -sum(kv[1]))
    f = _Frame(traffic, len(causes), nice(max(rates, default=0.0)))
    out = [
        f'<svg class="chart" id="traffic-chart" viewBox="0 0 {W:g} {f.height:g}" '
        'role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Requests and 5xx per second around incident {t(inc.id)}</title>',
        f'<desc id="chart-desc">{t(_describe(traffic, inc))}</desc>',
    ]
    out += _span(f, inc)
    out += _grid(f, traffic, tz)
    out += _series(f, traffic, tz)
    out += _lanes(f, traffic, causes)
    out += _incident_marks(f, inc)
    out += _notifications(f, inc)
    out += _steps(f, inc.steps)
    out.append("</svg>")
    return "\n".join(out)


def _describe(traffic: Traffic, inc: Incident) -> str:
    per = "second" if traffic.bucket == 1 else f"{traffic.bucket} seconds"
    return (
        f"{sum(traffic.requests)} requests, {sum(traffic.errors)} of them 5xx, one point per "
        f"{per}; {len(inc.steps)} step(s) marked where they happened."
    )


def _span(f: _Frame, inc: Incident) -> list[str]:
    start, end = inc.opened, inc.closed or inc.last
    if start is None or end is None:
        return []
    x0, x1 = f.x(start), f.x(max(end, start))
    return [
        f'<rect class="incident-span" x="{x0:.1f}" y="{f.top:.1f}" '
        f'width="{max(x1 - x0, 1.0):.1f}" height="{PLOT:.1f}"/>'
    ]


def _clock(when: float, tz: dt.tzinfo | None, seconds: bool) -> str:
    d = dt.datetime.fromtimestamp(when, tz) if tz is not None else dt.datetime.fromtimestamp(when)
    return d.strftime("%H:%M:%S" if seconds else "%H:%M")


def _grid(f: _Frame, traffic: Traffic, tz: dt.tzinfo | None) -> list[str]:
    out = ['<g class="grid">']
    for i in range(5):
        rate = f.ymax * i / 4
        y = f.y(rate)
        label = f"{rate:g}" if rate == int(rate) else f"{rate:.2g}"
        out.append(f'<line x1="{LEFT:g}" x2="{W - RIGHT:g}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="ylabel" x="{LEFT - 10:g}" y="{y + 5:.1f}">{label}</text>')
    out.append(f'<text class="yunit" x="{LEFT - 10:g}" y="{f.top - 8:.1f}">per second</text>')
    span = traffic.end - traffic.start
    step = next((s for s in _TICKS if span / s <= 8), _TICKS[-1])
    first = math.ceil(traffic.start / step) * step
    tick = float(first)
    while tick <= traffic.end:
        x = f.x(tick)
        out.append(f'<line class="xtick" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top:.1f}" '
                   f'y2="{f.bottom:.1f}"/>')  # fmt: skip
        out.append(
            f'<text class="xlabel" x="{x:.1f}" y="{f.bottom + 22:.1f}">'
            f"{_clock(tick, tz, step < 60)}</text>"
        )
        tick += step
    out.append(
        f'<line class="axis" x1="{LEFT:g}" x2="{W - RIGHT:g}" y1="{f.base:.1f}" y2="{f.base:.1f}"/>'
    )
    out.append("</g>")
    return out


def _series(f: _Frame, traffic: Traffic, tz: dt.tzinfo | None) -> list[str]:
    b = traffic.bucket
    if not traffic.has_requests:
        mid = (f.top + f.base) / 2
        return [
            f'<text class="nodata" x="{(LEFT + W - RIGHT) / 2:.1f}" y="{mid:.1f}">'
            "no access log lines cover this time</text>"
        ]
    pts: list[str] = []
    for k, n in enumerate(traffic.requests):
        y = f.y(n / b)
        x0, x1 = f.x(traffic.start + k * b), f.x(traffic.start + (k + 1) * b)
        pts.append(f"{x0:.1f},{y:.1f} {x1:.1f},{y:.1f}")
    line = " L".join(pts)
    area = f"M{f.x(traffic.start):.1f},{f.base:.1f} L{line} L{f.x(traffic.end):.1f},{f.base:.1f} Z"
    out = [
        '<g class="series">',
        f'<path class="req-area" d="{area}"/>',
        f'<path class="req-line" d="M{line}"/>',
    ]
    for k, n in enumerate(traffic.errors):
        if not n:
            continue
        x0, x1 = f.x(traffic.start + k * b), f.x(traffic.start + (k + 1) * b)
        h = max(f.base - f.y(n / b), 3.0)
        when = traffic.start + k * b
        out.append(
            f'<rect class="err-bar" x="{x0:.1f}" y="{f.base - h:.1f}" '
            f'width="{max(x1 - x0, 1.5):.1f}" height="{h:.1f}">'
            f"<title>{_clock(when, tz, True)}: {n} x 5xx of {traffic.requests[k]} requests"
            "</title></rect>"
        )
    out.append("</g>")
    return out


def _lanes(f: _Frame, traffic: Traffic, causes: list[tuple[str, list[int]]]) -> list[str]:
    b = traffic.bucket
    out = ['<g class="lanes">']
    for i, (cause, counts) in enumerate(causes):
        y = f.lanes_top + i * LANE
        top = max(counts)
        out.append(
            f'<g class="cause-lane" data-cause="{t(cause)}"><title>{t(cause)}: '
            f"{sum(counts)} error-log line(s)</title>"
        )
        out.append(
            f'<rect class="lane-bg" x="{LEFT:g}" y="{y:.1f}" width="{W - LEFT - RIGHT:g}" '
            f'height="{LANE - 6:g}"/>'
        )
        out.append(f'<text class="lane-label" x="{LEFT - 10:g}" y="{y + 15:.1f}">{t(cause)}</text>')
        for k, n in enumerate(counts):
            if n:
                x0, x1 = f.x(traffic.start + k * b), f.x(traffic.start + (k + 1) * b)
                out.append(
                    f'<rect class="cause-tick" x="{x0:.1f}" y="{y:.1f}" '
                    f'width="{max(x1 - x0, 2.0):.1f}" height="{LANE - 6:g}" '
                    f'fill-opacity="{0.35 + 0.65 * n / top:.2f}"/>'
                )
        out.append("</g>")
    out.append("</g>")
    return out


def _incident_marks(f: _Frame, inc: Incident) -> list[str]:
    out = []
    for kind, when in (("opened", inc.opened), ("closed", inc.closed)):
        if when is None:
            continue
        x = f.x(when)
        anchor = "end" if kind == "opened" else "start"
        dx = -6 if kind == "opened" else 6
        word = kind if kind == "opened" else f"closed: {inc.outcome}"
        out.append(
            f'<g class="incident-marker" data-kind="{kind}">'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.top:.1f}" y2="{f.bottom:.1f}"/>'
            f'<text x="{x + dx:.1f}" y="{f.base - 8:.1f}" text-anchor="{anchor}">{t(word)}</text>'
            "</g>"
        )
    return out


def _notifications(f: _Frame, inc: Incident) -> list[str]:
    out = []
    for rec in inc.notifications:
        when = ts_of(rec)
        if when is None:
            continue
        x, y = f.x(when), f.top
        out.append(
            f'<g class="notify-marker" data-outcome="{t(rec.get("outcome"))}">'
            f"<title>notify {t(rec.get('target'))}: {t(rec.get('outcome'))}</title>"
            f'<path d="M{x - 7:.1f},{y:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 12:.1f} Z"/></g>'
        )
    return out


def _rows(xs: Iterable[tuple[float, float]]) -> list[int]:
    """A label row for each (x, width): the first row where it does not overlap the last
    label put there; when none is free, the row that frees soonest."""
    ends = [-math.inf] * ROWS
    rows = []
    for x, width in xs:
        row = next(
            (r for r in range(ROWS) if ends[r] < x - 4), min(range(ROWS), key=ends.__getitem__)
        )
        ends[row] = x + width
        rows.append(row)
    return rows


def _label(step: Step) -> str:
    what = f"{step.action} {step.target}".strip()
    return f"{what}: {step.verdict}"


def _steps(f: _Frame, steps: list[Step]) -> list[str]:
    placed = [(s, s.at) for s in steps if s.at is not None]
    widths = [24 + len(_label(s)) * _CHAR for s, _ in placed]
    rows = _rows((f.x(at), w) for (_, at), w in zip(placed, widths, strict=True))
    out = ['<g class="steps">']
    for (step, at), row, width in zip(placed, rows, widths, strict=True):
        x = f.x(at)
        cy = 16.0 + row * ROW + ROW / 2
        right = x + width <= W
        lx = x + 15 if right else x - 15
        outcome = t(step.outcome)
        out.append(
            f'<g class="step-marker {tone(step.verdict)}" '
            f'data-step="{step.number}" data-outcome="{outcome}" data-verdict="{t(step.verdict)}">'
            f"<title>step {step.number}: {t(_label(step))}: {t(step.reason)}</title>"
        )
        verified = step.verification
        vt = ts_of(verified) if verified is not None else None
        if vt is not None and vt > at:
            out.append(
                f'<rect class="verify-span" x="{x:.1f}" y="{f.top:.1f}" '
                f'width="{max(f.x(vt) - x, 1.0):.1f}" height="6"/>'
            )
        out.append(
            f'<line class="step-line" x1="{x:.1f}" x2="{x:.1f}" y1="{cy:.1f}" y2="{f.bottom:.1f}"/>'
            f'<circle class="step-dot" cx="{x:.1f}" cy="{cy:.1f}" r="10"/>'
            f'<text class="step-num" x="{x:.1f}" y="{cy + 4.5:.1f}">{step.number}</text>'
            f'<text class="step-label" x="{lx:.1f}" y="{cy + 5:.1f}" '
            f'text-anchor="{"start" if right else "end"}">{t(_label(step))}</text></g>'
        )
    out.append("</g>")
    return out
