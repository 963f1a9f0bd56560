"""``remediator check``, the logs' half: does each configured log read in its format?

For every access_log and error_log source whose file exists, the last lines (up to
:data:`LINES`) are read as the daemon would read them: an access line parses when its format
reads a status and a time from it, an error line when its time is read. None parsing is an
error (the wrong format: the daemon would be blind and not know it), unless someone other
than root can write the log (then its lines are not the operator's to answer for, and junk
appended by www-data must not fail ``check``, the unit's ``ExecStartPre``): a warning; under
:data:`GOOD` a warning, with the first line that failed, escaped. The file is opened as the
daemon opens logs: no FIFO, no device, no symlink planted in a directory others can write. A path that does not exist is a warning:
the daemon reports that source blind until it appears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from remediator import escape
from remediator.config import AccessLogSource, Config, ErrorLogSource
from remediator.logtrust import writers
from remediator.sources.access.guess import AUTO, last_lines
from remediator.sources.formats import access_format, error_format

LINES: Final = 1000
GOOD: Final = 0.99
_SHOWN: Final = 200  # characters of a failing line shown


@dataclass
class LogReport:
    """What ``check`` says about the logs: errors fail it, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_logs(config: Config) -> LogReport:
    """Read the end of every configured access and error log in its format."""
    report = LogReport()
    for name, src in config.sources.items():
        if isinstance(src, AccessLogSource | ErrorLogSource):
            _check_source(name, src, report)
    return report


def _check_source(name: str, src: AccessLogSource | ErrorLogSource, report: LogReport) -> None:
    where = f"source {name}: {src.path}"
    try:
        lines = last_lines(src.path)
    except FileNotFoundError:
        report.warnings.append(
            escape.text(f"{where}: no such file (yet): the daemon reports it blind until it exists")
        )
        return
    except OSError as exc:
        report.warnings.append(escape.text(f"{where}: cannot be read: {exc.strerror}"))
        return
    if not lines:
        return  # nothing to check: a log just rotated
    if isinstance(src, AccessLogSource):
        fmt = access_format(src.format, src)
        label = src.format_name if fmt is None or src.format_name != AUTO else f"{fmt.name} (auto)"
        ok = [fmt is not None and fmt.time(line) is not None for line in lines]
    else:
        efmt = error_format(src.format)
        label = src.format
        ok = [efmt is not None and efmt.time(line) is not None for line in lines]
    parsed = sum(ok)
    said = f"{where}: {parsed} of the last {len(lines)} lines read as {label}"
    if parsed == len(lines):
        report.notes.append(escape.text(said))
        return
    bad = lines[ok.index(False)].decode("utf-8", "surrogateescape")
    shown = bad if len(bad) <= _SHOWN else bad[:_SHOWN] + "..."
    said += f"; the first that does not: {shown}"
    if parsed == 0 and _others_write(src):
        # Not the operator's lines alone: whoever else can write the log could fail `check`
        # (and with it the unit's ExecStartPre) with a thousand lines of junk.
        report.warnings.append(
            escape.text(said + " (the wrong format? others can write this log: not an error)")
        )
    elif parsed == 0:
        report.errors.append(escape.text(said + " (the wrong format?)"))
    elif parsed < GOOD * len(lines):
        report.warnings.append(escape.text(said))
    else:
        report.notes.append(escape.text(said))


def _others_write(src: AccessLogSource | ErrorLogSource) -> bool:
    """Whether someone other than root can write the log or replace it in its directory."""
    try:
        return bool(writers(src.path.stat()) or writers(src.path.parent.stat(), directory=True))
    except OSError:
        return True
