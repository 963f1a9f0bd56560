"""Loading the whole configuration: the main file, the playbook files, and cross-references.

Errors never raise: every problem of a run is collected, located, and returned. A broken main
file makes the configuration unusable; a broken playbook file disables only that file (the
running daemon keeps the rest, loudly), while ``check`` reports it and fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from remediator.config import CONFIG, Config
from remediator.playbook import PLAYBOOK_FILE, Playbook
from remediator.schema import ConfigError, Context, PendingRef, _Invalid, did_you_mean, options_of
from remediator.yamlsrc import check_ownership, read_yaml, trusted_uids

PLAYBOOK_SUFFIXES = (".yaml", ".yml")


@dataclass
class PlaybookFile:
    """One file of the playbooks directory and what became of it."""

    path: Path
    playbooks: list[Playbook] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    # Filled while loading, consumed by the cross-file checks:
    refs: list[PendingRef] = field(default_factory=list, repr=False)
    origins: list[tuple[str, int, int]] = field(default_factory=list, repr=False)
    # A running daemon keeps what it had from a file that now has errors (see keep_previous)
    kept: list[Playbook] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Loaded:
    """The outcome of loading: a usable config (or None) and everything that was wrong."""

    path: Path
    config: Config | None
    errors: list[ConfigError]
    files: list[PlaybookFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def playbooks(self) -> list[Playbook]:
        """The playbooks that can run: inline ones and those of files without errors."""
        if self.config is None:
            return []
        return [
            *self.config.playbooks,
            *(p for f in self.files for p in (f.playbooks if f.ok else f.kept)),
        ]

    def keep_previous(self, old: Loaded) -> list[str]:
        """For a reload: a playbook file that now has errors keeps the playbooks it had in
        ``old`` (if they still fit this config); returns what was kept, for the log."""
        if self.config is None:
            return []
        before = {f.path: f for f in old.files if f.ok}
        defined = _tables(self.config)
        kept = []
        for f in self.files:
            prev = before.get(f.path)
            if f.ok or prev is None:
                continue
            f.kept = [pb for pb in prev.playbooks if _fits(pb, defined)]
            kept += [pb.name for pb in f.kept]
        return kept

    def all_errors(self) -> list[ConfigError]:
        return [*self.errors, *(e for f in self.files for e in f.errors)]

    @property
    def ok(self) -> bool:
        return not self.all_errors()


def _display(path: Path) -> str:
    """A path as the operator will recognise it: relative to the cwd when below it, but not
    when the cwd is / (a service's): "etc/remediator/x.yaml" would read as a relative path."""
    cwd = Path.cwd()
    if cwd == Path(cwd.anchor):
        return str(path)
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def load(path: Path, *, uids: frozenset[int] | None = None) -> Loaded:
    """Load and validate ``path`` and its playbooks directory.

    ``uids``: owners accepted for config files (default: root and the current user).
    """
    uids = trusted_uids() if uids is None else uids
    path = Path(os.path.abspath(path))  # noqa: PTH100 - keep symlinks: the operator's spelling
    display = _display(path)
    node, errors = read_yaml(path, display, uids=uids)
    if node is None:
        return Loaded(path, None, errors)
    ctx = Context(display, path.parent)
    value = CONFIG.load(node, ctx, "")
    if isinstance(value, _Invalid):
        # Still read the playbooks, so one run reports every error it can (not the references:
        # those need a valid main file).
        files, dir_errors, _ = _load_dir(_guess_playbooks_dir(node, path.parent), uids)
        return Loaded(path, None, [*ctx.errors, *dir_errors], files)
    config: Config = value
    playbooks_dir = config.playbooks_dir
    if not playbooks_dir.is_absolute():
        playbooks_dir = path.parent / playbooks_dir
    files, dir_errors, warnings = _load_dir(playbooks_dir, uids)
    tables = _tables(config)
    main_errors = [*ctx.errors, *_check_refs(ctx.refs, tables), *dir_errors]
    seen: dict[str, str] = {pb.name: display for pb in config.playbooks}
    for f in files:
        f.errors.extend(_check_refs(f.refs, tables))
        for pb, (disp, line, col) in zip(f.playbooks, f.origins, strict=True):
            first = seen.setdefault(pb.name, f"{disp}:{line}")
            if first != f"{disp}:{line}":
                f.errors.append(
                    ConfigError(
                        disp,
                        line,
                        col,
                        "name",
                        f"playbook '{pb.name}' is already defined at {first}",
                    )
                )
    if config.playbooks == () and not any(f.playbooks for f in files):
        warnings.append("no usable playbooks: the daemon will watch and report, but never act")
    return Loaded(path, config, main_errors, files, warnings)


def _guess_playbooks_dir(node: Node, base: Path) -> Path:
    """``playbooks_dir`` from a main file that did not validate, else the default."""
    return base / _guess(node, "playbooks_dir")


def _guess(node: Node | None, key: str) -> Path:
    """A path option read from a main file that did not validate (else its default)."""
    value = Path(next(o.default for o in options_of(Config) if o.key == key))
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if k.value == key and isinstance(v, ScalarNode) and v.value:
                value = Path(v.value)
    return value


def state_dir_hint(path: Path) -> Path:
    """Where the state dir most likely is, even when the main file has errors (``status``
    must still show the daemon that runs on the previous, valid config)."""
    path = Path(os.path.abspath(path))  # noqa: PTH100
    node, _ = read_yaml(path, str(path))
    return path.parent / _guess(node, "state_dir")


def _load_dir(
    directory: Path, uids: frozenset[int]
) -> tuple[list[PlaybookFile], list[ConfigError], list[str]]:
    display = _display(directory)
    if not directory.is_dir():
        return [], [ConfigError(display, 1, 1, "", "playbooks directory does not exist")], []
    dir_errors = check_ownership(directory, display, uids)
    if dir_errors:
        return [], dir_errors, []
    files: list[PlaybookFile] = []
    warnings: list[str] = []
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if name.startswith(".") or not name.endswith(PLAYBOOK_SUFFIXES):
            if not name.startswith(".") and entry.is_file():
                warnings.append(f"{_display(entry)}: ignored (only *.yaml and *.yml are read)")
            continue
        files.append(_load_file(entry, uids))
    return files, [], warnings


def _load_file(path: Path, uids: frozenset[int]) -> PlaybookFile:
    display = _display(path)
    pf = PlaybookFile(path)
    node, errors = read_yaml(path, display, uids=uids)
    if node is None:
        pf.errors = errors
        return pf
    ctx = Context(display, path.parent)
    value = PLAYBOOK_FILE.load(node, ctx, "")
    pf.errors = ctx.errors
    if not isinstance(value, _Invalid):
        pf.playbooks = list(value)
        items = node.value if isinstance(node, SequenceNode) else [node]
        for item in items:
            name_node = next((v for k, v in item.value if k.value == "name"), item)
            mark = name_node.start_mark
            pf.origins.append((display, mark.line + 1, mark.column + 1))
    pf.refs = ctx.refs
    return pf


def _tables(config: Config) -> dict[str, dict[str, str | None]]:
    """For each kind of reference, the defined names and their category."""
    return {
        "source": {n: type(s).kind for n, s in config.sources.items()},
        "service": {n: s.kind for n, s in config.services.items()},
        "notifier": dict.fromkeys(config.notifiers),
    }


def _check_refs(refs: list[PendingRef], tables: dict[str, dict[str, Any]]) -> list[ConfigError]:
    out = []
    for ref in refs:
        table = tables[ref.kind]
        mark = ref.node.start_mark
        where = (ref.ctx.file, mark.line + 1, mark.column + 1, ref.key)
        if ref.name not in table:
            candidates = [n for n, cat in table.items() if not ref.accept or cat in ref.accept]
            if not table:
                hint = f": no {ref.kind}s are defined"
            else:
                hint = did_you_mean(ref.name, candidates) or (
                    f"; defined: {', '.join(candidates)}" if candidates else ""
                )
            out.append(ConfigError(*where, f"{ref.kind} '{ref.name}' is not defined{hint}"))
        elif ref.accept and table[ref.name] not in ref.accept:
            out.append(
                ConfigError(
                    *where,
                    f"{ref.kind} '{ref.name}' is {_a(table[ref.name])}; "
                    f"{ref.wanted_by} needs {' or '.join(_a(a) for a in ref.accept)}",
                )
            )
    return out


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _fits(pb: Playbook, tables: dict[str, dict[str, Any]]) -> bool:
    """Whether every name ``pb`` refers to is still defined (a kept playbook must not name a
    service the new config removed)."""
    from remediator.playbook import walk_conditions  # noqa: PLC0415

    for cond in walk_conditions(pb.when):
        for attr in ("source", "probe"):
            name = getattr(cond, attr, None)
            if name is not None and name not in tables["source"]:
                return False
    for step in pb.steps:
        for attr, kind in (("service", "service"), ("notifier", "notifier")):
            name = getattr(step.args, attr, None)
            if isinstance(name, str) and name not in tables[kind]:
                return False
        probe = step.verify.probe if step.verify else None
        if probe is not None and probe not in tables["source"]:
            return False
    return all(n in tables["notifier"] for n in pb.on_exhausted.notify)
