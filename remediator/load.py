"""Loading the whole configuration: the main file, the playbook files, and cross-references.

Errors never raise: every problem of a run is collected, located, and returned. A broken main
file makes the configuration unusable; a broken playbook file disables only that file (the
running daemon keeps the rest, loudly), while ``check`` reports it and fails.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from remediator import secret, trust
from remediator.config import CONFIG, Config, FpmStatusSource
from remediator.fleet.options import Fleet
from remediator.playbook import PLAYBOOK_FILE, FpmStuck, Playbook, walk_conditions
from remediator.schema import (
    ConfigError,
    Context,
    PendingRef,
    ProgramFinder,
    _Invalid,
    did_you_mean,
    options_of,
)
from remediator.trust import Untrusted, trusted_uids
from remediator.yamlsrc import read_yaml

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
    main = read_yaml(path, display, uids=uids)
    node = main.node
    if node is None:
        return Loaded(path, None, main.errors)
    ctx = Context(display, path.parent, _programs(uids))
    value = CONFIG.load(node, ctx, "")
    if isinstance(value, _Invalid):
        # Still read the playbooks, so one run reports every error it can (not the references:
        # those need a valid main file).
        files, dir_errors, _ = _load_dir(_guess_playbooks_dir(node, path.parent), uids)
        return Loaded(path, None, [*ctx.errors, *dir_errors], files)
    config, secret_errors, warnings = _secrets(value, node, display, main.mode, uids)
    ctx.errors.extend(secret_errors)
    if config.fleet is not None:
        fleet_errors, fleet_warnings = _fleet_files(config.fleet, node, display, uids)
        ctx.errors.extend(fleet_errors)
        warnings += fleet_warnings
    playbooks_dir = config.playbooks_dir
    if not playbooks_dir.is_absolute():
        playbooks_dir = path.parent / playbooks_dir
    # The default directory may be absent (playbooks in this file, or none yet); one the
    # operator named must exist: a typo would silently leave its playbooks out.
    named = isinstance(node, MappingNode) and any(k.value == "playbooks_dir" for k, _ in node.value)
    files, dir_errors, dir_warnings = _load_dir(playbooks_dir, uids, required=named)
    warnings += dir_warnings
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
    loaded = Loaded(path, config, main_errors, files, warnings)
    warnings += _blind_stuck(config, loaded.playbooks)
    warnings += _untrusted_arguments(loaded.playbooks, uids)
    return loaded


def _blind_stuck(config: Config, playbooks: list[Playbook]) -> list[str]:
    """``fpm_stuck`` needs to look at the pool's workers: its source must name the service."""
    out = []
    for pb in playbooks:
        for cond in walk_conditions(pb.when):
            if not isinstance(cond, FpmStuck):
                continue
            src = config.sources.get(cond.source)
            if isinstance(src, FpmStatusSource) and (src.service is None or src.url is not None):
                out.append(
                    f"playbook '{pb.name}': fpm_stuck on source '{cond.source}' can never hold: "
                    "the source must read the pool's socket and name its `service` (the "
                    "workers are looked at in /proc)"
                )
    return out


def _untrusted_arguments(playbooks: list[Playbook], uids: frozenset[int]) -> list[str]:
    """A ``command`` whose argument names a file others can change (``php /var/www/artisan``,
    ``sh /srv/app/fix.sh``): its program is judged, but what it runs or reads from that file
    is whoever can write it's word, run as root. Warned, not refused: the program may only
    write there."""
    out = []
    for pb in playbooks:
        for number, step in enumerate(pb.steps, 1):
            if step.action != "command":
                continue
            for arg in step.args.argv[1:]:
                if not arg.startswith("/") or "{" in arg or not os.path.isfile(arg):  # noqa: PTH113
                    continue
                try:
                    trust.trusted_file(Path(arg), uids)
                except Untrusted as exc:
                    out.append(
                        f"playbook '{pb.name}' step {number}: its command's argument {arg} "
                        f"can be changed by others ({exc}): if {step.args.argv[0]} runs or "
                        "reads it, whoever can write it steers root"
                    )
                except OSError:
                    continue
    return out


def _programs(uids: frozenset[int]) -> ProgramFinder:
    """How ``command`` programs are found and judged at load time (see ``trust.program``)."""

    def find(name: str, base_dir: Path) -> tuple[str | None, str | None]:
        try:
            return str(trust.program(name, base_dir, uids)), None
        except Untrusted as exc:
            return None, f"refusing to run it: {exc}"
        except OSError as exc:
            return None, f"program '{name}': {exc.strerror or exc}"

    return find


def _secrets(
    config: Config, node: Node, display: str, mode: int | None, uids: frozenset[int]
) -> tuple[Config, list[ConfigError], list[str]]:
    """Notifiers with their ``url_file``/``headers_file`` read in; errors for files that could
    not be used, and warnings for secrets written in a main file that others can read."""
    errors: list[ConfigError] = []
    warnings: list[str] = []
    notifiers = {}
    readable = mode is not None and mode & stat.S_IROTH
    for name, notifier in config.notifiers.items():
        loaded, problems = secret.load(notifier, uids)
        notifiers[name] = loaded
        for key, problem in problems:
            where = _where(node, "notifiers", name, key)
            errors.append(ConfigError(display, *where, f"notifiers.{name}.{key}", problem))
        if readable:
            for key, what in secret.exposures(notifier):
                line, col = _where(node, "notifiers", name, *key.split(".", 1))
                warnings.append(
                    f"{display}:{line}:{col}: notifiers.{name}.{key}: {what}, and this file is "
                    f"readable by everyone (mode {stat.S_IMODE(mode or 0):04o}): move it to "
                    f"{'url_file' if key == 'url' else 'headers_file'} (root's alone, 0600), "
                    f"or chmod o-r {trust.quote(display)}"
                )
    return dataclasses.replace(config, notifiers=notifiers), errors, warnings


def _fleet_files(
    fleet: Fleet, node: Node, display: str, uids: frozenset[int]
) -> tuple[list[ConfigError], list[str]]:
    """The fleet's TLS and password files that cannot be used (errors), and a client key
    others can read (a warning), each located at its option."""
    from remediator.fleet import files  # noqa: PLC0415 - only with a `fleet:` section

    problems, cautions = files.problems(fleet, uids)
    errors = [
        ConfigError(display, *_where(node, "fleet", key), f"fleet.{key}", problem)
        for key, problem in problems
    ]
    warnings = []
    for key, caution in cautions:
        line, col = _where(node, "fleet", key)
        warnings.append(f"{display}:{line}:{col}: fleet.{key}: {caution}")
    return errors, warnings


def _where(node: Node, *keys: str) -> tuple[int, int]:
    """Line and column of the value at ``keys`` (or of the deepest key found)."""
    for key in keys:
        if not isinstance(node, MappingNode):
            break
        found = next(((k, v) for k, v in node.value if k.value == key), None)
        if found is None:
            break
        node = found[1]
    return node.start_mark.line + 1, node.start_mark.column + 1


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
    return path.parent / _guess(read_yaml(path, str(path)).node, "state_dir")


def _load_dir(
    directory: Path, uids: frozenset[int], *, required: bool = True
) -> tuple[list[PlaybookFile], list[ConfigError], list[str]]:
    display = _display(directory)
    if not required and not os.path.lexists(directory):
        return [], [], []
    if not directory.is_dir():
        return [], [ConfigError(display, 1, 1, "", "playbooks directory does not exist")], []
    try:
        trust.trusted_dir(directory, uids)
    except Untrusted as exc:
        return [], [ConfigError(display, 1, 1, "", f"refusing to use it: {exc}")], []
    except OSError as exc:
        return [], [ConfigError(display, 1, 1, "", f"cannot read: {exc.strerror or exc}")], []
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
    read = read_yaml(path, display, uids=uids)
    node = read.node
    if node is None:
        pf.errors = read.errors
        return pf
    ctx = Context(display, path.parent, _programs(uids))
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
