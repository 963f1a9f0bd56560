"""Lines of configured log sources into detector signals: the one path for live and replay.

Live, a tailer's batch of lines is counted at its arrival time; in replay, lines sharing a
timestamp are counted at that time. Either way the same code counts statuses and causes,
keeps the per-source statistics and the newest matching lines as evidence, so an incident
read live and replayed has the same readings and the same evidence lines.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediator.config import AccessLogSource, Config, ErrorLogSource, JournalSource
from remediator.detect import SAMPLE_LINES, Lazy, Signals, Window
from remediator.sources.access.scanner import Statuses
from remediator.sources.formats import access_format, error_format


@dataclass
class SourceStats:
    """Per-source counters for ``status``: what was read, what was odd."""

    lines: int = 0
    malformed: int = 0
    matched: int = 0  # 5xx lines, or classified error lines
    untimed: int = 0  # replay: lines with no time of their own and none before them
    last_line_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Feeder:
    """Turns lines of configured log sources into detector signals."""

    def __init__(self, config: Config, signals: Signals) -> None:
        self.signals = signals
        self.access: dict[Path, tuple[str, Any]] = {}
        self.errors: dict[Path, tuple[str, Any]] = {}
        self.formats: dict[str, Any] = {}  # source name -> its access or error format
        self.stats: dict[str, SourceStats] = {}
        for name, src in config.sources.items():
            self.stats[name] = SourceStats()
            if isinstance(src, AccessLogSource):
                fmt = self.formats[name] = access_format(src.format, src)
                self.access[src.path] = (name, fmt)
            elif isinstance(src, ErrorLogSource):
                efmt = self.formats[name] = error_format(src.format)
                self.errors[src.path] = (name, efmt)
            elif isinstance(src, JournalSource):
                self.formats[name] = error_format(src.format)

    @property
    def paths(self) -> list[Path]:
        return [*self.access, *self.errors]

    def add_source(self, name: str, fmt: Any) -> None:
        """A source known only to a replay (a file read ``--format``, not configured)."""
        self.formats[name] = fmt
        self.stats.setdefault(name, SourceStats())

    def feed(self, path: Path, lines: list[bytes], now: float) -> None:
        """Count a tailer's batch of complete lines, all at ``now``."""
        if path in self.access:
            name, fmt = self.access[path]
            batch = fmt.scan_lines(lines)
            self.statuses(name, lines, Statuses(batch.codes), batch.malformed, now)
        elif path in self.errors:
            self.causes(self.errors[path][0], lines, now)

    def feed_messages(self, name: str, messages: list[bytes], now: float) -> None:
        """Journal messages of a source, classified like error-log lines."""
        self.causes(name, messages, now)

    def statuses(
        self, name: str, lines: Sequence[bytes], statuses: Statuses, malformed: int, now: float
    ) -> collections.Counter[int]:
        """Count an access-log source's lines, scanned already into ``statuses`` (one per
        well-formed line, in order), at ``now``; keep the newest 5xx lines as evidence.
        Returns the counts per status."""
        st = self.stats[name]
        st.lines += len(statuses) + malformed
        st.malformed += malformed
        st.last_line_at = now
        counts = statuses.counts()
        win = self.signals.statuses.get(name)
        if win is not None:
            win.add_many(now, counts)
        errors = sum(n for s, n in counts.items() if s >= 500)
        aligned = malformed == 0 and len(lines) == len(statuses)
        if errors:
            st.matched += errors
            self._sample_access(name, lines, statuses if aligned else None, errors)
        acted_at = self.signals.acted_at
        if acted_at is not None and win is not None and now >= acted_at:
            self._early(name, lines, statuses if aligned else None, now, acted_at, win)
        return counts

    def _early(
        self,
        name: str,
        lines: Sequence[bytes],
        statuses: Statuses | None,
        now: float,
        acted_at: float,
        win: Any,
    ) -> None:
        """While a step is verified: count the lines just logged whose request had started
        before the action (logged at ``now`` after taking their duration), so verification
        judges only requests made after it. Costs a full parse per line, only then."""
        fmt = self.formats[name]
        if not fmt.has_duration:
            return
        early: collections.Counter[int] = collections.Counter()
        for i, line in enumerate(lines):
            took = fmt.duration(line)
            if took is None or now - took >= acted_at:
                continue
            status = statuses[i] if statuses is not None else fmt.status(line)
            if status is not None:
                early[status] += 1
        if early:
            w = self.signals.early.get(name)
            if w is None:
                w = self.signals.early[name] = Window(max(win.horizons))
            w.add_many(now, early)

    def causes(self, name: str, lines: Iterable[bytes], now: float) -> list[Any]:
        """Classify an error-log (or journal) source's lines, all at ``now``; the causes."""
        st = self.stats[name]
        efmt = self.formats[name]
        st.last_line_at = now
        win = self.signals.causes.get(name)
        found = []
        for line in lines:
            st.lines += 1
            cause = efmt.classify(line)
            if cause is None:
                continue
            found.append(cause)
            st.matched += 1
            if win is not None:
                win.add(now, cause)
            self.signals.sample(name, line.decode("utf-8", "replace"))
        return found

    def _sample_access(
        self, name: str, lines: Sequence[bytes], statuses: Statuses | None, errors: int
    ) -> None:
        """Keep the newest few 5xx lines as evidence, in the order they were written. With
        ``statuses`` aligned to ``lines`` they are found from the scan already made; otherwise
        lines are parsed again from the newest back, until enough are found."""
        want = min(errors, SAMPLE_LINES)
        if statuses is not None:  # found from the statuses, only if the evidence is read
            self.signals.sample(name, Lazy(want, functools.partial(_newest, lines, statuses, want)))
            return
        newest: list[bytes] = []
        fmt = self.formats[name]
        for line in reversed(lines):
            status = fmt.status(line)
            if status is not None and status >= 500:
                newest.append(line)
                if len(newest) == want:
                    break
        for line in reversed(newest):
            self.signals.sample(name, line.decode("utf-8", "replace"))


_FIVE = 500


def _newest(lines: Sequence[bytes], statuses: Statuses, want: int) -> list[str]:
    """The newest ``want`` 5xx lines of ``lines``, oldest first."""
    return [lines[i].decode("utf-8", "replace") for i in statuses.newest(_FIVE, want)]


UNTIMED_WAITING = 100_000  # lines kept waiting for a file's first time (memory bound)


def error_times(
    efmt: Any, lines: Iterable[bytes], tz: dt.tzinfo | None, stats: SourceStats
) -> Iterable[tuple[float, list[bytes]]]:
    """An error log's lines in runs sharing a time (replay). A line without a time of its own
    (a continuation, a journal message) takes the last known time and is counted ``untimed``;
    lines before the first time wait for it (up to ``UNTIMED_WAITING`` of them). A file with no
    time at all is only counted, as lines and untimed."""
    run: list[bytes] = []
    run_t: float | None = None
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        t = efmt.time(line, tz)
        if t is None:
            stats.untimed += 1
            if run_t is not None or len(run) < UNTIMED_WAITING:
                run.append(line)  # joins the last known time's run, or waits for the first
            else:
                stats.lines += 1  # too many before any time: counted, not kept
            continue
        if run and run_t is not None and t != run_t:
            yield run_t, run
            run = []
        run_t = t
        run.append(line)
    if run and run_t is not None:
        yield run_t, run
    elif run:
        stats.lines += len(run)
