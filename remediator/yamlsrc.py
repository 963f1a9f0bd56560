"""Reading one YAML file of the operator's into a node tree, safely and with located errors.

Only the composer runs: nodes keep their marks (line, column) and nothing is constructed, so a
``!!python/object`` tag is just text we refuse. The file is trusted first, like sshd's
StrictModes (:mod:`remediator.trust`): a config file that someone else can write, or that sits in
a directory someone else can write, is a way to run commands as root.

The composer is bounded, so a small hostile file cannot explode: anchors and aliases are refused
as they are met (an alias "bomb" is a few hundred bytes that expand to gigabytes), and so is
nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_NODES` nodes; files are at most
:data:`MAX_BYTES`. Every refusal is a located error, never a RecursionError or MemoryError.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from remediator.schema import ALLOWED_TAGS, ConfigError
from remediator.trust import Untrusted, read_file

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000  # 27 times the shipped config and its nine playbooks, all told


@dataclass
class YamlFile:
    """What reading one file gave: its root node (None when unusable), errors, and its mode
    (for warnings about who may read it; None when it was not opened)."""

    node: Node | None
    errors: list[ConfigError] = field(default_factory=list)
    mode: int | None = None


def read_yaml(path: Path, display: str, *, uids: frozenset[int] | None = None) -> YamlFile:
    """The root node of ``path``, or None and the errors that prevent reading it.

    ``uids`` set: the file and its directories are judged first (:func:`remediator.trust.
    read_file`); None reads it without judging its owner (a hint, never config to act on).
    """
    try:
        raw, st, _ = read_file(path, uids, max_bytes=MAX_BYTES)
    except Untrusted as exc:
        return YamlFile(None, [ConfigError(display, 1, 1, "", f"refusing to use it: {exc}")])
    except OSError as exc:
        return YamlFile(None, [ConfigError(display, 1, 1, "", f"cannot read: {_strerror(exc)}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return YamlFile(None, [ConfigError(display, line, col, "", "not valid UTF-8")], st.st_mode)
    node, errors = parse_yaml(text, display)
    return YamlFile(node, errors, st.st_mode)


def _strerror(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symlink where none may be (or a loop of them)"
    return exc.strerror or str(exc)


class _Refused(yaml.YAMLError):
    def __init__(self, event: Event, message: str) -> None:
        super().__init__(message)
        self.line = event.start_mark.line + 1 if event.start_mark else 1
        self.column = event.start_mark.column + 1 if event.start_mark else 1
        self.message = message


def parse_yaml(text: str, display: str) -> tuple[Node | None, list[ConfigError]]:
    """Compose ``text`` into nodes; report tabs, syntax errors, emptiness, tags, duplicate keys."""
    errors = _tab_errors(text, display)
    if errors:
        return None, errors  # the parser's own message about a tab is confusing; ours is clear
    try:
        nodes = _compose_all(text)
    except _Refused as exc:
        return None, [ConfigError(display, exc.line, exc.column, "", exc.message)]
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


# libyaml's parser when PyYAML has it (a 1 MiB file in ~0.2 s instead of ~3 s), else PyYAML's.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()


def _compose_all(text: str) -> list[Node]:
    """The documents of ``text`` as node trees, composed from parser events without
    recursion; anchors, aliases and excess refused as they are met (before anything is shared
    or nested), with the mark of the event."""
    docs: list[Node] = []
    stack: list[tuple[Node, list[Node]]] = []  # open collections and their items so far
    count = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, AliasEvent):
            raise _Refused(
                event, f"YAML alias '*{event.anchor}' is not allowed: write the value out"
            )
        if isinstance(event, NodeEvent):
            if event.anchor is not None:
                raise _Refused(
                    event,
                    f"YAML anchor '&{event.anchor}' is not allowed (anchors and aliases can make "
                    "a small file expand without bound): write the values out",
                )
            count += 1
            if count > MAX_NODES:
                raise _Refused(event, f"more than {MAX_NODES} values: is it config?")
        node: Node
        if isinstance(event, ScalarEvent):
            tag = _tag(ScalarNode, event.tag, event.value, event.implicit)
            start, end = _mark(event.start_mark), _mark(event.end_mark)
            node = ScalarNode(tag, event.value, start, end, event.style)
        elif isinstance(event, SequenceStartEvent | MappingStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Refused(event, f"nested more than {MAX_DEPTH} levels deep")
            kind = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
            tag = _tag(kind, event.tag, None, event.implicit)
            opened = kind(tag, [], _mark(event.start_mark), None, flow_style=event.flow_style)
            stack.append((opened, []))
            continue
        elif isinstance(event, CollectionEndEvent):
            node, items = stack.pop()
            node.end_mark = _mark(event.end_mark)
            if isinstance(node, MappingNode):
                node.value = list(zip(items[::2], items[1::2], strict=True))
            else:
                node.value = items
        else:  # stream and document start and end
            continue
        if stack:
            stack[-1][1].append(node)
        else:
            docs.append(node)
    return docs


def _tag(kind: type[Node], tag: str | None, value: str | None, implicit: object) -> str:
    """The node's tag: the one written, else the one its plain value implies (as PyYAML's
    composer resolves it)."""
    if tag is None or tag == "!":
        return str(_RESOLVER.resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
    return tag


def _mark(mark: object) -> yaml.Mark | None:
    """libyaml's marks pass for PyYAML's: line and column are all that is read from them."""
    return cast("yaml.Mark | None", mark)


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
