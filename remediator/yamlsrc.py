"""Reading one YAML file of the operator's into a node tree, safely and with located errors.

Only the composer runs: nodes keep their marks (line, column) and nothing is constructed, so a
``!!python/object`` tag is just text we refuse. Ownership and permissions are checked first, like
sshd and logrotate do: a config file that someone else can write is a way to run commands as root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from remediator.schema import ALLOWED_TAGS, ConfigError

_MAX_BYTES = 4 * 1024 * 1024


def trusted_uids() -> frozenset[int]:
    """Owners whose files we accept: root and the user the daemon runs as."""
    return frozenset({0, os.geteuid()})


def check_ownership(path: Path, display: str, uids: frozenset[int]) -> list[ConfigError]:
    """Refuse a file (or directory) that others can write or that a stranger owns.

    A symlink is judged by its target, as sshd does: the link itself cannot be written through.
    """
    try:
        st = path.stat()
    except OSError as exc:
        return [ConfigError(display, 1, 1, "", f"cannot read: {exc.strerror}")]
    errors = []
    quoted = _shell_quote(str(path.resolve()))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(
            w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit
        )
        errors.append(
            ConfigError(
                display,
                1,
                1,
                "",
                f"refusing to use it: writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"fix with: chmod go-w {quoted}",
            )
        )
    if st.st_uid not in uids:
        errors.append(
            ConfigError(
                display,
                1,
                1,
                "",
                f"refusing to use it: owned by uid {st.st_uid}, not root or the daemon's user; "
                f"fix with: chown root: {quoted}",
            )
        )
    return errors


def _shell_quote(text: str) -> str:
    if text and all(c.isalnum() or c in "/._-+:@" for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def read_yaml(
    path: Path, display: str, *, uids: frozenset[int] | None = None
) -> tuple[Node | None, list[ConfigError]]:
    """The root node of ``path``, or None and the errors that prevent reading it.

    ``uids`` set: the file's owner and mode are checked first (None skips the check).
    """
    if uids is not None:
        errors = check_ownership(path, display, uids)
        if errors:
            return None, errors
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        return None, [ConfigError(display, 1, 1, "", f"cannot read: {exc.strerror}")]
    if len(raw) > _MAX_BYTES:
        return None, [ConfigError(display, 1, 1, "", "file is larger than 4 MiB; is it config?")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [ConfigError(display, line, col, "", "not valid UTF-8")]
    return parse_yaml(text, display)


def parse_yaml(text: str, display: str) -> tuple[Node | None, list[ConfigError]]:
    """Compose ``text`` into nodes; report tabs, syntax errors, emptiness, tags, duplicate keys."""
    errors = _tab_errors(text, display)
    if errors:
        return None, errors  # the parser's own message about a tab is confusing; ours is clear
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        return None, [ConfigError(display, line, col, "", f"YAML syntax error: {problem}{context}")]
    except yaml.YAMLError as exc:
        return None, [ConfigError(display, 1, 1, "", f"YAML error: {exc}")]
    if len(nodes) > 1:
        mark = nodes[1].start_mark
        return None, [
            ConfigError(
                display, mark.line + 1, mark.column + 1, "", "more than one YAML document (---)"
            )
        ]
    if not nodes or (isinstance(nodes[0], ScalarNode) and nodes[0].tag.endswith(":null")):
        return None, [ConfigError(display, 1, 1, "", "file is empty")]
    root = nodes[0]
    errors = _structure_errors(root, display)
    return (None, errors) if errors else (root, [])


def _tab_errors(text: str, display: str) -> list[ConfigError]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" \t"))
        col = line.find("\t", 0, indent)
        if col >= 0:
            out.append(
                ConfigError(
                    display, number, col + 1, "", "tab character in indentation: indent with spaces"
                )
            )
    return out


def _structure_errors(root: Node, display: str) -> list[ConfigError]:
    """Tags that would construct objects, and duplicate keys, anywhere in the tree."""
    out: list[ConfigError] = []

    def err(node: Node, key: str, message: str) -> None:
        mark = node.start_mark
        out.append(ConfigError(display, mark.line + 1, mark.column + 1, key, message))

    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in ALLOWED_TAGS:
            err(
                node,
                key,
                f"YAML tag '{_short_tag(node.tag)}' is not allowed: only plain data "
                "(strings, numbers, booleans, lists, mappings)",
            )
            continue
        if isinstance(node, MappingNode):
            keys: dict[str, Node] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, ScalarNode):
                    err(knode, key, "keys must be plain strings")
                    continue
                child = f"{key}.{knode.value}" if key else str(knode.value)
                if knode.value == "<<":
                    err(knode, key, "merge keys (<<) are not supported: write the keys out")
                    continue
                first = keys.get(knode.value)
                if first is not None:
                    err(
                        knode,
                        child,
                        f"duplicate key '{knode.value}' (first at line {first.start_mark.line + 1})",
                    )
                keys[knode.value] = knode
                stack.append((knode, child))
                stack.append((vnode, child))
        elif isinstance(node, SequenceNode):
            stack.extend((child, f"{key}[{i}]") for i, child in enumerate(node.value))
    out.sort()
    return out


def _short_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix) :] if tag.startswith(prefix) else tag
