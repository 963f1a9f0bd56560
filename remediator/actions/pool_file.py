"""A PHP-FPM pool file, read and edited safely: one pool's ``pm`` and its children settings.

:func:`parse_pool` finds the one ``pm.max_children`` line of the file's one pool (and, for
``pm = dynamic``, the spare-server lines that must stay within it). A value that is not a plain
integer, a setting given twice, settings of two pools in one file: each is a
:class:`PoolError`, never a guess. :meth:`PoolFile.edit` puts new values in place and leaves
every other byte as it was; :func:`dynamic_bounds` keeps the spare-server settings within a
lower ``pm.max_children`` and :func:`dynamic_raised` scales them with a higher one. Nothing here
touches the disk beyond what it is given: writing, testing and reloading are the action's
(:mod:`remediator.actions.scale`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKUP_SUFFIX = ".remediator-bak"
MAX_CHILDREN = "pm.max_children"
START = "pm.start_servers"
MIN_SPARE = "pm.min_spare_servers"
MAX_SPARE = "pm.max_spare_servers"
_KEYS = frozenset({"pm", MAX_CHILDREN, START, MIN_SPARE, MAX_SPARE})
PM_KINDS = ("static", "dynamic", "ondemand")

# `value`, `"value"`, either followed by an optional `; comment`.
_NUMBER = re.compile(r'\s*(?P<q>"?)(?P<num>[0-9]+)(?P=q)\s*(?:;.*)?')
_WORD = re.compile(r'\s*(?P<q>"?)(?P<word>[A-Za-z]+)(?P=q)\s*(?:;.*)?')


class PoolError(ValueError):
    """The pool file is not one we can edit safely."""


@dataclass(frozen=True)
class Setting:
    """A numeric setting's line: where its digits are, and their value."""

    key: str
    value: int
    line: int  # 0-based index into PoolFile.lines
    start: int  # the digits' span in that line
    end: int


@dataclass(frozen=True)
class PoolFile:
    """A pool file's lines (line endings kept) and the settings scaling touches."""

    path: Path
    lines: tuple[str, ...]
    pool: str
    pm: str
    settings: dict[str, Setting]

    def edit(self, values: dict[str, int]) -> tuple[bytes, list[dict[str, Any]]]:
        """The file with ``values`` put in place (all else byte for byte), and the changed lines."""
        lines = list(self.lines)
        changes: list[dict[str, Any]] = []
        for key, value in values.items():
            s = self.settings[key]
            if value == s.value:
                continue
            old = lines[s.line]
            lines[s.line] = f"{old[: s.start]}{value}{old[s.end :]}"
            changes.append(
                {
                    "line": s.line + 1,
                    "key": key,
                    "before": old.rstrip("\r\n"),
                    "after": lines[s.line].rstrip("\r\n"),
                }
            )
        return "".join(lines).encode("utf-8", "surrogateescape"), changes


def parse_pool(path: Path, data: bytes) -> PoolFile:
    """Find the pool's ``pm`` and its children settings; raise :class:`PoolError` if unsure."""
    lines = tuple(data.decode("utf-8", "surrogateescape").splitlines(keepends=True))
    section = ""
    raw: dict[str, tuple[str, int, str]] = {}  # key -> (section, line index, text after '=')
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith((";", "#")):
            continue
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1].strip()
            continue
        name, sep, _ = line.partition("=")
        key = name.strip()
        if not sep or key not in _KEYS or section == "global":
            continue
        where = f"{path}:{i + 1}"
        if key in raw:
            first, at, _ = raw[key]
            if first != section:
                raise PoolError(
                    f"{where}: settings of more than one pool ([{first}], [{section}]); "
                    "scale_workers edits a file with one pool"
                )
            raise PoolError(f"{where}: {key} is set twice (first on line {at + 1})")
        raw[key] = (section, i, line[len(name) + 1 :].rstrip("\r\n"))
    if MAX_CHILDREN not in raw:
        raise PoolError(f"{path}: no {MAX_CHILDREN} line in this file")
    sections = {sec for sec, _, _ in raw.values()}
    if "" in sections:
        raise PoolError(f"{path}: pool settings before any [pool] section")
    if len(sections) > 1:
        names = ", ".join(f"[{s}]" for s in sorted(sections))
        raise PoolError(
            f"{path}: settings of more than one pool ({names}); "
            "scale_workers edits a file with one pool"
        )
    pool = sections.pop()
    pm = _pm(path, raw.get("pm"))
    settings = {
        key: _setting(path, key, lines[i], i, after)
        for key, (_, i, after) in raw.items()
        if key != "pm" and (key == MAX_CHILDREN or pm == "dynamic")
    }
    return PoolFile(path, lines, pool, pm, settings)


def _pm(path: Path, found: tuple[str, int, str] | None) -> str:
    if found is None:
        raise PoolError(f"{path}: no 'pm' line: the process manager's kind is unknown")
    _, i, after = found
    m = _WORD.fullmatch(after)
    if m is None or m.group("word") not in PM_KINDS:
        raise PoolError(f"{path}:{i + 1}: cannot read pm value '{after.strip()}'")
    return m.group("word")


def _setting(path: Path, key: str, line: str, i: int, after: str) -> Setting:
    m = _NUMBER.fullmatch(after)
    if m is None:
        raise PoolError(
            f"{path}:{i + 1}: cannot read {key} value '{after.strip()}' as a plain number; "
            "not editing it"
        )
    offset = line.index("=") + 1
    return Setting(key, int(m.group("num")), i, offset + m.start("num"), offset + m.end("num"))


def dynamic_bounds(pool: PoolFile, max_children: int) -> dict[str, int]:
    """Values for every setting, keeping ``pm = dynamic``'s rules (PHP-FPM refuses otherwise):
    min_spare <= max_spare <= max_children, min_spare <= start_servers <= max_spare."""
    values = {MAX_CHILDREN: max_children}
    s = pool.settings
    if pool.pm != "dynamic":
        return values
    max_spare = min(s[MAX_SPARE].value, max_children) if MAX_SPARE in s else None
    if max_spare is not None:
        values[MAX_SPARE] = max_spare
    if MIN_SPARE in s:
        values[MIN_SPARE] = min(s[MIN_SPARE].value, max_spare or max_children)
    if START in s:
        low = values.get(MIN_SPARE, 1)
        values[START] = max(low, min(s[START].value, max_spare or max_children))
    return values


def dynamic_raised(pool: PoolFile, max_children: int) -> dict[str, int]:
    """Values for raising ``pm.max_children`` to ``max_children``: a ``pm = dynamic`` pool keeps
    its shape, each spare-server setting scaled by the same factor (rounded up, at most the
    new maximum). A reload restarts the pool with ``pm.start_servers`` workers and the master
    adds spares about once a second: raised from 2 to 12 with one start server, a saturated pool
    would come back with one worker and grow while its backlog fills."""
    old = pool.settings[MAX_CHILDREN].value
    if pool.pm != "dynamic" or max_children <= old:
        return dynamic_bounds(pool, max_children)
    values = {MAX_CHILDREN: max_children}
    for key in (MIN_SPARE, START, MAX_SPARE):  # ceil keeps min <= start <= max as they were
        if key in pool.settings:
            scaled = -(-pool.settings[key].value * max_children // old)
            values[key] = min(max_children, scaled)
    return values


def backup_path(path: Path) -> Path:
    """Where the original is kept beside the pool file while it is edited."""
    return path.with_name(path.name + BACKUP_SUFFIX)
