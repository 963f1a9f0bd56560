"""``remediator report``: one incident as a self-contained HTML page.

The page shows what users got around the incident (requests and 5xx per second, read back
from the access logs where they are still on disk, else from the incident's evidence), the
error causes, each step on the chart where it happened with its outcome, the exact commands,
the guards that held anything back, the corroboration and the evidence lines.

- :mod:`.incident` reads the incident back from the action log;
- :mod:`.traffic` counts the logs around it;
- :mod:`.chart` draws it (inline SVG: see there why no chart library);
- :mod:`.page` writes the page; :mod:`.markup` escapes every outside value for it.

Nothing of this runs while the daemon watches: no module of the daemon imports this package
(``tests/test_report_imports.py`` checks it), so a report costs nothing until one is asked for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from remediator.config import Config
from remediator.report import chart, page, traffic
from remediator.report.incident import Incident, NoIncident, choose, gather
from remediator.review import records

__all__ = ["NoIncident", "Report", "build", "write"]

BEFORE_MIN: Final = 15.0  # seconds shown before the incident opened, at least
BEFORE_MAX: Final = 600.0
AFTER_MIN: Final = 10.0  # seconds shown after it closed, at least
AFTER_MAX: Final = 300.0
LONGEST: Final = 6 * 3600.0  # an incident open for longer is shown from its start


@dataclass(frozen=True)
class Report:
    incident: Incident
    html: str


def _margins(inc: Incident) -> tuple[float, float]:
    """Seconds shown before the incident and after it: before, twice the longest window a
    trigger condition looked back over (the errors that opened it began earlier), and at
    least its own length; after, its length (how it went on); each within bounds."""
    windows = [
        float(r["window_s"])
        for r in inc.evidence.get("readings") or ()
        if isinstance(r, dict) and isinstance(r.get("window_s"), int | float)
    ]
    start, end = inc.opened, inc.closed or inc.last
    took = end - start if start is not None and end is not None else 0.0
    before = min(max([BEFORE_MIN, took, *(2 * w for w in windows)]), BEFORE_MAX)
    return before, min(max(AFTER_MIN, took), AFTER_MAX)


def build(
    cfg: Config,
    wanted: str | None,
    *,
    now: float,
    host: str,
    tz: dt.tzinfo | None = None,
) -> Report:
    """The page of the incident ``wanted`` names (an id or its prefix; None: the newest) in
    ``cfg``'s action log. Raises :class:`NoIncident` when there is no such incident."""
    path: Path = cfg.action_log
    everything = list(records(path))
    chosen = choose(everything, wanted, str(path))
    mine = Incident(chosen, [r for r in everything if r.get("incident") == chosen], [])
    before, after = _margins(mine)
    inc = gather(everything, chosen, margin=before)
    opened = inc.opened if inc.opened is not None else now
    end = max(inc.closed or inc.last or opened, opened) + after
    counts = traffic.window(opened - before, min(end, opened + LONGEST))
    traffic.read(cfg, inc.evidence, counts)  # servers write local time: this machine's zone
    svg = chart.svg(counts, inc, tz)
    text = page.html(inc, counts, svg, action_log=str(path), generated=now, host=host, tz=tz)
    return Report(inc, text)


def write(text: str, path: Path) -> None:
    """Write the page to ``path`` whole or not at all: a temporary file in the same
    directory renamed over it (a symlink at ``path`` is replaced, never followed), mode 0640
    (the page holds log lines, as the action log does)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o640)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
