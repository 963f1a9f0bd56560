"""Declarations of the configuration language, and the loader that enforces them.

Every option is declared once, as a field of a frozen dataclass with a :func:`opt` marker that
carries its type (a :class:`Spec`), default and help text. The same declarations

* validate a YAML node tree, producing typed objects and *located* errors
  (``file:line:col: key.path: message``), never exceptions;
* generate the JSON Schema that editors use (``remediator schema``);
* generate ``docs/configuration.md``.

Specs work on PyYAML *nodes* (``yaml.compose``), not constructed Python objects, so every value
keeps its line and column and no YAML tag can ever construct an object.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")
U = TypeVar("U")

_STR: Final = "tag:yaml.org,2002:str"
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"
_BOOL: Final = "tag:yaml.org,2002:bool"
_NULL: Final = "tag:yaml.org,2002:null"
_TIMESTAMP: Final = "tag:yaml.org,2002:timestamp"
_SEQ: Final = "tag:yaml.org,2002:seq"
_MAP: Final = "tag:yaml.org,2002:map"
ALLOWED_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _SEQ, _MAP})

_TAG_NAMES: Final = {
    _STR: "a string",
    _INT: "an integer",
    _FLOAT: "a number",
    _BOOL: "a boolean",
    _NULL: "nothing (null)",
    _TIMESTAMP: "a date",
    _SEQ: "a list",
    _MAP: "a mapping",
}


class _Invalid:
    """Marker for a value that failed validation (its error is already recorded)."""

    _instance: ClassVar[_Invalid | None] = None

    def __new__(cls) -> _Invalid:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


@dataclass(frozen=True, order=True)
class ConfigError:
    """One located problem in a configuration file."""

    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass
class PendingRef:
    """A name that must refer to something defined elsewhere, checked after loading."""

    kind: str
    name: str
    accept: tuple[str, ...]
    wanted_by: str
    node: Node
    key: str
    ctx: Context


ProgramFinder = Callable[[str, Path], "tuple[str | None, str | None]"]
"""``(name, base_dir)`` -> ``(absolute path, None)`` or ``(None, why not)``."""


class Context:
    """Where errors of one file are collected while its nodes are loaded."""

    def __init__(self, file: str, base_dir: Path, programs: ProgramFinder | None = None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []
        self.refs: list[PendingRef] = []
        # Resolves the program of an argv (see Argv) when loading for real; None leaves it as
        # written (docs, tests of the language).
        self.programs = programs

    def error(self, node: Node | None, key: str, message: str) -> _Invalid:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.errors.append(ConfigError(self.file, line, col, key, message))
        return INVALID


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(key: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{key}[{part}]"
    return f"{key}.{part}" if key else part


def _a(what: str) -> str:
    """``what`` with its indefinite article: "an argument", "a string"."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _kind(node: Node) -> str:
    return _TAG_NAMES.get(node.tag, f"a value tagged {node.tag}")


# --- specs ------------------------------------------------------------------------------------


class Spec(ABC, Generic[T]):
    """The type of one option: how to load it from a node, describe it and put it in a schema."""

    name: str | None = None  # named specs become a definition of their own in the JSON Schema

    @abstractmethod
    def load(self, node: Node, ctx: Context, key: str) -> T | _Invalid:
        """The typed value of ``node``, or INVALID after recording an error in ``ctx``."""

    @abstractmethod
    def describe(self) -> str:
        """The type in a few words, for the generated docs."""

    @abstractmethod
    def _json(self, defs: dict[str, Any]) -> dict[str, Any]: ...

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        """This spec as JSON Schema (draft-07); named specs go into ``defs`` and are referenced."""
        if self.name is None:
            return self._json(defs)
        if self.name not in defs:
            defs[self.name] = {}  # placeholder: recursion ends here
            defs[self.name] = self._json(defs)
        return {"$ref": f"#/definitions/{self.name}"}

    def render(self, value: Any) -> str:
        """A default value as an operator would write it."""
        return str(value)


class _ScalarSpec(Spec[T]):
    """A spec for one scalar; subclasses convert the raw text/value."""

    expected: ClassVar[str] = "a value"

    def load(self, node: Node, ctx: Context, key: str) -> T | _Invalid:
        if not isinstance(node, ScalarNode):
            return ctx.error(node, key, f"expected {self.expected}, got {_kind(node)}")
        return self.convert(node, ctx, key)

    @abstractmethod
    def convert(self, node: ScalarNode, ctx: Context, key: str) -> T | _Invalid: ...


class Str(_ScalarSpec[str]):
    expected = "a string"

    def __init__(
        self,
        *,
        pattern: str | None = None,
        pattern_help: str = "",
        nonempty: bool = True,
        check: Callable[[str], str | None] | None = None,
        what: str = "string",
    ) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.pattern_help = pattern_help
        self.nonempty = nonempty
        self.check = check
        self.what = what

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> str | _Invalid:
        if node.tag in (_BOOL, _NULL):
            return ctx.error(
                node, key, f"expected {_a(self.what)}, got {_kind(node)} '{node.value}' (quote it)"
            )
        value = str(node.value)
        if self.nonempty and not value:
            return ctx.error(node, key, f"must not be empty (expected {_a(self.what)})")
        if self.pattern and not self.pattern.fullmatch(value):
            return ctx.error(node, key, f"'{value}' is not a valid {self.what}{self.pattern_help}")
        if self.check:
            problem = self.check(value)
            if problem:
                return ctx.error(node, key, problem)
        return value

    def describe(self) -> str:
        return self.what

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern.pattern})$"
        elif self.nonempty:
            out["minLength"] = 1
        return out

    def render(self, value: Any) -> str:
        return f"'{value}'" if value == "" else str(value)


class Bool(_ScalarSpec[bool]):
    expected = "true or false"

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> bool | _Invalid:
        if node.tag != _BOOL:
            return ctx.error(node, key, f"expected true or false, got '{node.value}'")
        return node.value.lower() in ("true", "yes", "on", "y")

    def describe(self) -> str:
        return "boolean"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}

    def render(self, value: Any) -> str:
        return "true" if value else "false"


class Int(_ScalarSpec[int]):
    expected = "an integer"

    def __init__(self, *, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> int | _Invalid:
        if node.tag != _INT:
            return ctx.error(node, key, f"expected an integer, got '{node.value}'")
        try:
            value = int(node.value.replace("_", ""), 0)
        except ValueError:
            return ctx.error(node, key, f"expected an integer, got '{node.value}'")
        return _check_range(value, self.min, self.max, node, ctx, key, str)

    def describe(self) -> str:
        return "integer" + _range_text(self.min, self.max, str)

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        return out


class Float(_ScalarSpec[float]):
    expected = "a number"

    def __init__(self, *, min: float | None = None, max: float | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> float | _Invalid:
        if node.tag not in (_INT, _FLOAT):
            return ctx.error(node, key, f"expected a number, got '{node.value}'")
        try:
            value = float(node.value.replace("_", ""))
        except ValueError:
            return ctx.error(node, key, f"expected a number, got '{node.value}'")
        return _check_range(value, self.min, self.max, node, ctx, key, _fmt_num)

    def describe(self) -> str:
        return "number" + _range_text(self.min, self.max, _fmt_num)

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        return out


def _fmt_num(value: float) -> str:
    return f"{value:g}"


_N = TypeVar("_N", int, float)


def _check_range(
    value: _N,
    lo: _N | None,
    hi: _N | None,
    node: Node,
    ctx: Context,
    key: str,
    fmt: Callable[[_N], str],
) -> _N | _Invalid:
    if lo is not None and value < lo:
        return ctx.error(node, key, f"{fmt(value)} is too small (at least {fmt(lo)})")
    if hi is not None and value > hi:
        return ctx.error(node, key, f"{fmt(value)} is too large (at most {fmt(hi)})")
    return value


def _range_text(lo: Any, hi: Any, fmt: Callable[[Any], str]) -> str:
    if lo is not None and hi is not None:
        return f", {fmt(lo)} to {fmt(hi)}"
    if lo is not None:
        return f", at least {fmt(lo)}"
    if hi is not None:
        return f", at most {fmt(hi)}"
    return ""


_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN: Final = r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+|0"


def parse_duration(text: str) -> float | None:
    """Seconds in ``30s``, ``5m``, ``1h30m``, ``250ms`` (or ``0``); None when malformed."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def format_duration(seconds: float) -> str:
    """The shortest operator spelling of a duration: 5400 -> ``1h30m``, 0.25 -> ``250ms``."""
    if seconds == 0:
        return "0"
    if seconds < 1 or seconds != int(seconds):
        whole = int(seconds)
        ms = round((seconds - whole) * 1000)
        return (format_duration(whole) if whole else "") + (f"{ms}ms" if ms else "")
    out, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


class Duration(_ScalarSpec[float]):
    """A span of time, in seconds once loaded."""

    expected = "a duration like 30s, 5m or 1h30m"

    def __init__(self, *, min: float | None = None, max: float | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> float | _Invalid:
        text = str(node.value).strip()
        seconds = parse_duration(text)
        if seconds is None:
            hint = f" (did you mean '{text}s'?)" if re.fullmatch(r"\d+(\.\d+)?", text) else ""
            return ctx.error(
                node,
                key,
                f"'{text}' is not a duration: use a number with a unit, ms, s, m, h or d, "
                f"like 30s, 5m or 1h30m{hint}",
            )
        return _check_range(seconds, self.min, self.max, node, ctx, key, format_duration)

    def describe(self) -> str:
        return "duration" + _range_text(self.min, self.max, format_duration)

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^(?:{DURATION_PATTERN})$"}

    def render(self, value: Any) -> str:
        return format_duration(float(value))


_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?")
_SIZE_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int | None:
    """Bytes in ``512M``, ``512MiB``, ``1.5G``, ``4096``; binary units; None when malformed."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(value: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


class Size(_ScalarSpec[int]):
    """An amount of memory, in bytes once loaded (binary units: 1M = 1MiB)."""

    expected = "a size like 512MiB or 2G"

    def __init__(self, *, min: int | None = None) -> None:
        self.min = min

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> int | _Invalid:
        value = parse_size(str(node.value))
        if value is None:
            return ctx.error(node, key, f"'{node.value}' is not a size: use e.g. 512MiB, 2G, 64k")
        return _check_range(value, self.min, None, node, ctx, key, format_size)

    def describe(self) -> str:
        return "size (bytes; k, M, G with binary meaning)"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": ["string", "integer"], "pattern": _SIZE.pattern}

    def render(self, value: Any) -> str:
        return format_size(int(value))


class Ratio(_ScalarSpec[float]):
    """A fraction 0..1, written as ``0.05`` or ``5%``."""

    expected = "a ratio like 0.05 or 5%"

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> float | _Invalid:
        text = str(node.value).strip()
        try:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            return ctx.error(node, key, f"'{text}' is not a ratio: write 0.05 or 5%")
        if not 0 <= value <= 1:
            return ctx.error(node, key, f"'{text}' is out of range: a ratio is 0 to 1 (0% to 100%)")
        return value

    def describe(self) -> str:
        return "ratio (0.05 or 5%)"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": ["number", "string"],
            "minimum": 0,
            "maximum": 1,
            "pattern": r"^\d+(\.\d+)?%$",
        }

    def render(self, value: Any) -> str:
        return f"{float(value) * 100:g}%"


class Choice(_ScalarSpec[str]):
    """One of a fixed set of words."""

    expected = "one of a fixed set of values"

    def __init__(self, choices: Iterable[str], *, what: str = "value") -> None:
        self.choices = tuple(choices)
        self.what = what

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> str | _Invalid:
        value = str(node.value)
        if value not in self.choices:
            return ctx.error(
                node,
                key,
                f"unknown {self.what} '{value}'{did_you_mean(value, self.choices)}; "
                f"expected one of: {', '.join(self.choices)}",
            )
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices)

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"enum": list(self.choices)}


class PathSpec(Str):
    """A file system path; a relative one is taken from the config file's own directory."""

    def __init__(self, what: str = "path") -> None:
        super().__init__(what=what)

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> Any:
        value = super().convert(node, ctx, key)
        if isinstance(value, _Invalid):
            return value
        return ctx.base_dir / Path(value).expanduser()

    def render(self, value: Any) -> str:
        return str(value)


def check_url(value: str) -> str | None:
    """Why ``value`` is not a URL to POST to, or None. The URL is not quoted: it may hold a
    token (the error is located, the operator sees which one)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL with a host"
    try:
        _ = parts.port
    except ValueError:
        return "the URL has an invalid port"
    return None


class Url(Str):
    def __init__(self) -> None:
        super().__init__(check=check_url, what="URL")


class Ref(Str):
    """The name of something defined elsewhere (a source, service, notifier), checked at the end."""

    def __init__(self, kind: str, accept: tuple[str, ...] = (), wanted_by: str = "") -> None:
        super().__init__(what=f"{kind} name")
        self.kind = kind
        self.accept = accept
        self.wanted_by = wanted_by

    def convert(self, node: ScalarNode, ctx: Context, key: str) -> str | _Invalid:
        value = super().convert(node, ctx, key)
        if not isinstance(value, _Invalid):
            ctx.refs.append(
                PendingRef(self.kind, value, self.accept, self.wanted_by, node, key, ctx)
            )
        return value

    def describe(self) -> str:
        what = f"name of a {self.kind}"
        return what + (f" ({' or '.join(self.accept)})" if self.accept else "")


class ListOf(Spec[tuple[T, ...]]):
    """A YAML list; optionally a single item may be written without the list."""

    def __init__(self, item: Spec[T], *, min_len: int = 0, single: bool = False) -> None:
        self.item = item
        self.min_len = min_len
        self.single = single

    def load(self, node: Node, ctx: Context, key: str) -> tuple[T, ...] | _Invalid:
        if not isinstance(node, SequenceNode):
            if self.single:
                one = self.item.load(node, ctx, key)
                return INVALID if isinstance(one, _Invalid) else (one,)
            return ctx.error(node, key, f"expected a list, got {_kind(node)}")
        if len(node.value) < self.min_len:
            return ctx.error(node, key, f"needs at least {self.min_len} item(s)")
        out: list[T] = []
        ok = True
        for i, child in enumerate(node.value):
            value = self.item.load(child, ctx, _join(key, i))
            if isinstance(value, _Invalid):
                ok = False
            else:
                out.append(value)
        return tuple(out) if ok else INVALID

    def describe(self) -> str:
        return f"list of {self.item.describe()}" + (" (or just one)" if self.single else "")

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        arr: dict[str, Any] = {"type": "array", "items": self.item.json_schema(defs)}
        if self.min_len:
            arr["minItems"] = self.min_len
        if self.single:
            return {"anyOf": [arr, self.item.json_schema(defs)]}
        return arr

    def render(self, value: Any) -> str:
        return "[" + ", ".join(self.item.render(v) for v in value) + "]"


class Argv(ListOf[str]):
    """A command line: the program, then its arguments (a list, never a shell).

    Loaded for real (``ctx.programs`` set), the program is found and judged at load time and
    the absolute path found replaces it: what runs is what ``check`` judged.
    """

    def __init__(self) -> None:
        super().__init__(Str(what="argument"), min_len=1)

    def load(self, node: Node, ctx: Context, key: str) -> tuple[str, ...] | _Invalid:
        value = super().load(node, ctx, key)
        if isinstance(value, _Invalid) or ctx.programs is None:
            return value
        first = node.value[0] if isinstance(node, SequenceNode) else node
        if "{" in value[0]:
            return ctx.error(first, _join(key, 0), "the program cannot use a {placeholder}")
        path, problem = ctx.programs(value[0], ctx.base_dir)
        if path is None:
            return ctx.error(first, _join(key, 0), problem or "program not usable")
        return (path, *value[1:])


NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


class MapOf(Spec[dict[str, T]]):
    """A mapping from operator-chosen names to values of one spec."""

    def __init__(
        self,
        value: Spec[T],
        *,
        what: str = "name",
        pattern: str = NAME_PATTERN,
        pattern_help: str = "letters, digits, _.-",
    ) -> None:
        self.value = value
        self.what = what
        self.pattern = pattern
        self.pattern_help = pattern_help
        self._name_re = re.compile(pattern)

    def load(self, node: Node, ctx: Context, key: str) -> dict[str, T] | _Invalid:
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return {}
        if not isinstance(node, MappingNode):
            return ctx.error(node, key, f"expected a mapping of {self.what}s, got {_kind(node)}")
        out: dict[str, T] = {}
        ok = True
        for knode, vnode in node.value:
            name = str(knode.value)
            if not isinstance(knode, ScalarNode) or not self._name_re.fullmatch(name):
                ctx.error(knode, key, f"'{name}' is not a valid {self.what} ({self.pattern_help})")
                ok = False
                continue
            value = self.value.load(vnode, ctx, _join(key, name))
            if isinstance(value, _Invalid):
                ok = False
            else:
                out[name] = value
        return out if ok else INVALID

    def describe(self) -> str:
        return f"mapping of {self.what} to {self.value.describe()}"

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "propertyNames": {"pattern": f"^{self.pattern}$"},
            "additionalProperties": self.value.json_schema(defs),
        }


class Wrap(Spec[U], Generic[T, U]):
    """Another spec's value passed through a constructor (``all: [...]`` -> ``AllOf(...)``)."""

    def __init__(self, inner: Spec[T], build: Callable[[T], U]) -> None:
        self.inner = inner
        self.build = build

    def load(self, node: Node, ctx: Context, key: str) -> U | _Invalid:
        value = self.inner.load(node, ctx, key)
        return INVALID if isinstance(value, _Invalid) else self.build(value)

    def describe(self) -> str:
        return self.inner.describe()

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return self.inner.json_schema(defs)


# --- records ----------------------------------------------------------------------------------


def opt(spec: Spec[Any], help: str, default: Any = MISSING) -> Any:
    """Declare a dataclass field as a config option: its type, help and default."""
    meta = {"spec": spec, "help": help}
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Option:
    """A declared option of a record, as docs and schema see it."""

    key: str
    spec: Spec[Any]
    help: str
    required: bool
    default: Any


def options_of(cls: type[Any]) -> list[Option]:
    out = []
    for f in dataclasses.fields(cls):
        if "spec" not in f.metadata:
            continue
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append(
            Option(f.name, f.metadata["spec"], f.metadata["help"], default is MISSING, default)
        )
    return out


class Record(Spec[T]):
    """A mapping with declared keys, loaded into the dataclass ``cls``.

    ``shorthand`` names the field a non-mapping value fills (``reload: php-fpm`` means
    ``reload: {service: php-fpm}``). The dataclass may define ``check(self)`` yielding
    ``(field, message)`` pairs for rules that span fields; they are reported at that field.
    """

    def __init__(
        self,
        cls: type[T],
        *,
        name: str | None = None,
        shorthand: str | None = None,
        ignore: tuple[str, ...] = (),
    ) -> None:
        self.cls = cls
        self.name = name
        self.shorthand = shorthand
        self.ignore = ignore
        self.options = {o.key: o for o in options_of(cls)}
        self.title = (cls.__doc__ or "").strip()

    def load(self, node: Node, ctx: Context, key: str) -> T | _Invalid:
        values: dict[str, Any] = {}
        where: dict[str, Node] = {}
        ok = True
        if isinstance(node, MappingNode):
            for knode, vnode in node.value:
                k = str(knode.value)
                if k in self.ignore:
                    continue
                opt_ = self.options.get(k)
                if opt_ is None:
                    ctx.error(
                        knode, _join(key, k), f"unknown key '{k}'{did_you_mean(k, self.options)}"
                    )
                    ok = False
                    continue
                value = opt_.spec.load(vnode, ctx, _join(key, k))
                where[k] = vnode
                if isinstance(value, _Invalid):
                    ok = False
                else:
                    values[k] = value
        elif isinstance(node, ScalarNode) and node.tag == _NULL and not self._required():
            pass
        elif self.shorthand is not None:
            value = self.options[self.shorthand].spec.load(node, ctx, key)
            where[self.shorthand] = node
            if isinstance(value, _Invalid):
                return value
            values[self.shorthand] = value
        else:
            return ctx.error(node, key, f"expected a mapping, got {_kind(node)}")
        for missing in self._required() - where.keys():
            ctx.error(node, key, f"missing required key '{missing}'")
            ok = False
        if not ok:
            return INVALID
        obj = self.cls(**values)
        check = getattr(obj, "check", None)
        if check is not None:
            for field_name, message in check():
                at = _join(key, field_name) if field_name else key
                ctx.error(where.get(field_name, node), at, message)
                ok = False
        return obj if ok else INVALID

    def _required(self) -> set[str]:
        return {k for k, o in self.options.items() if o.required}

    def describe(self) -> str:
        return self.name or self.cls.__name__

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        props = {}
        for o in self.options.values():
            p = dict(o.spec.json_schema(defs))
            p["description"] = o.help
            if not o.required and o.default is not None:
                p["default"] = _json_default(o.spec.render(o.default), o.default)
            props[o.key] = p
        out: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        for k in self.ignore:
            props[k] = {}
        if self.title:
            out["description"] = self.title
        required = sorted(self._required())
        if required:
            out["required"] = required
        if self.shorthand:
            return {"anyOf": [out, self.options[self.shorthand].spec.json_schema(defs)]}
        return out


def _json_default(text: str, value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value if not isinstance(value, float) or text.replace(".", "").isdigit() else text
    return text


class Tagged(Spec[T]):
    """A mapping whose ``type`` key picks which record it is (sources, say)."""

    def __init__(
        self, variants: Mapping[str, Record[Any]], *, key: str = "type", what: str
    ) -> None:
        self.variants = dict(variants)
        self.key = key
        self.what = what

    def load(self, node: Node, ctx: Context, key: str) -> T | _Invalid:
        if not isinstance(node, MappingNode):
            return ctx.error(node, key, f"expected a mapping, got {_kind(node)}")
        for knode, vnode in node.value:
            if knode.value == self.key:
                kind = str(vnode.value)
                record = self.variants.get(kind)
                if record is None or not isinstance(vnode, ScalarNode):
                    return ctx.error(
                        vnode,
                        _join(key, self.key),
                        f"unknown {self.what} type '{kind}'{did_you_mean(kind, self.variants)}; "
                        f"expected one of: {', '.join(self.variants)}",
                    )
                return cast(T | _Invalid, record.load(node, ctx, key))
        return ctx.error(
            node,
            key,
            f"missing required key '{self.key}' (one of: {', '.join(self.variants)})",
        )

    def describe(self) -> str:
        return self.what

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        branches = []
        for kind, record in self.variants.items():
            ref = record.json_schema(defs)
            branches.append(
                {
                    "if": {"properties": {self.key: {"const": kind}}, "required": [self.key]},
                    "then": ref,
                }
            )
        return {
            "type": "object",
            "required": [self.key],
            "properties": {self.key: {"enum": list(self.variants)}},
            "allOf": branches,
        }


class OneKey(Spec[T]):
    """A mapping with exactly one key out of a set, which says what it is (conditions)."""

    def __init__(self, *, what: str, name: str | None = None) -> None:
        self.variants: dict[str, Spec[Any]] = {}
        self.helps: dict[str, str] = {}
        self.what = what
        self.name = name

    def add(self, key: str, spec: Spec[Any], help: str) -> None:
        self.variants[key] = spec
        self.helps[key] = help

    def load(self, node: Node, ctx: Context, key: str) -> T | _Invalid:
        if not isinstance(node, MappingNode) or len(node.value) != 1:
            got = f"{len(node.value)} keys" if isinstance(node, MappingNode) else _kind(node)
            return ctx.error(
                node,
                key,
                f"expected a mapping with exactly one {self.what} "
                f"({', '.join(self.variants)}), got {got}",
            )
        knode, vnode = node.value[0]
        name = str(knode.value)
        spec = self.variants.get(name)
        if spec is None:
            return ctx.error(
                knode,
                _join(key, name),
                f"unknown {self.what} '{name}'{did_you_mean(name, self.variants)}; "
                f"expected one of: {', '.join(self.variants)}",
            )
        return cast(T | _Invalid, spec.load(vnode, ctx, _join(key, name)))

    def describe(self) -> str:
        return self.what

    def _json(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {k: {**s.json_schema(defs), "description": self.helps[k]}},
                    "required": [k],
                    "additionalProperties": False,
                }
                for k, s in self.variants.items()
            ]
        }
