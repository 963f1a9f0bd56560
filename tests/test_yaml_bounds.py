"""YAML cannot explode: anchors and aliases refused, nesting, node count and size bounded.

Each refusal is a located error (``file:line:col: message``), never a RecursionError or
MemoryError; the fuzz at the end feeds random nested text with anchors and aliases to the loader
and the schema, and bounds the memory they take (tracemalloc). How fast a bomb is refused is
measured by ``make bench`` (tests/bench), not asserted here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, SequenceNode

from remediator.config import CONFIG
from remediator.load import load
from remediator.playbook import PLAYBOOK_FILE
from remediator.schema import Context
from remediator.yamlsrc import MAX_DEPTH, MAX_NODES, _compose_all, parse_yaml

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefghi", "bcdefghij", strict=True)
        ),
    ]
)
CONFIG_TEXT = """\
sources:
  access: {type: access_log, path: access.log}
services:
  fpm: {kind: php-fpm, unit: php8.2-fpm.service}
"""
CONDITION = "{status_rate: {source: access, status: 502, at_least: 5}}"


def nested_any(depth: int) -> str:
    when = CONDITION
    for _ in range(depth):
        when = "{any: [" + when + "]}"
    return f"name: deep\nwhen: {when}\nsteps: [restart: fpm]\n"


def _errors(text: str) -> list[str]:
    node, errors = parse_yaml(text, "x.yaml")
    assert (node is None) == bool(errors)
    return [str(e) for e in errors]


def test_an_anchor_is_refused_where_it_is() -> None:
    assert _errors("a: 1\nb: &x [1, 2]\n") == [
        "x.yaml:2:4: YAML anchor '&x' is not allowed (anchors and aliases can make a small file "
        "expand without bound): write the values out"
    ]


def test_an_alias_is_refused_where_it_is() -> None:
    # an alias to an undefined anchor: the parser's own error must not come first
    assert _errors("a: 1\nb: *x\n") == [
        "x.yaml:2:4: YAML alias '*x' is not allowed: write the value out"
    ]


def test_the_billion_laughs_bomb_is_refused_at_its_first_anchor() -> None:
    assert _errors(BOMB)[0].startswith("x.yaml:1:4: YAML anchor '&a' is not allowed")


def test_nesting_deeper_than_the_bound_is_refused_where_it_gets_too_deep() -> None:
    depth = MAX_DEPTH + 10
    assert _errors("[" * depth + "]" * depth) == [
        f"x.yaml:1:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"
    ]
    assert _errors("[" * MAX_DEPTH + "]" * MAX_DEPTH) == []


def test_a_hundred_thousand_values_are_the_limit() -> None:
    [error] = _errors("[" + "0," * (MAX_NODES + 5) + "0]")
    assert error.endswith(f"more than {MAX_NODES} values: is it config?")


def test_300_nested_any_is_a_located_error_not_a_recursion_error(tmp_path: Path) -> None:
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "deep.yaml").write_text(nested_any(300))
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(CONFIG_TEXT)
    loaded = load(cfg)
    [error] = loaded.all_errors()
    assert str(error).startswith(f"{tmp_path / 'playbooks.d' / 'deep.yaml'}:2:")
    assert error.message == f"nested more than {MAX_DEPTH} levels deep"


def test_nesting_within_the_bound_still_loads(tmp_path: Path) -> None:
    (tmp_path / "playbooks.d").mkdir()
    (tmp_path / "playbooks.d" / "deep.yaml").write_text(nested_any(MAX_DEPTH // 2 - 2))
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(CONFIG_TEXT)
    assert load(cfg).ok


# --- fuzz ---------------------------------------------------------------------------------------

_ANCHOR = st.sampled_from(["&a ", "&b ", "&lol ", ""])
_SCALAR = st.one_of(
    st.sampled_from(["lol", "1", "true", "null", "~", "2s", '"q"', "'s'", "*a", "*b", "*lol"]),
    st.text(alphabet="ab:-[]{},&*!#|>'\"\n ", max_size=12),
)


def _flow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    lists = st.lists(children, max_size=6).map(lambda xs: "[" + ", ".join(xs) + "]")
    maps = st.lists(st.tuples(_SCALAR, children), max_size=5).map(
        lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
    )
    deep = st.tuples(st.integers(1, 300), children).map(lambda t: "[" * t[0] + t[1] + "]" * t[0])
    return st.tuples(_ANCHOR, st.one_of(lists, maps, deep)).map("".join)


_DOC = st.recursive(_SCALAR, _flow, max_leaves=40)
_TEXT = st.one_of(
    _DOC,
    _DOC.map(lambda d: f"name: x\nwhen: {d}\nsteps: {d}\n"),
    st.lists(st.tuples(st.sampled_from(["a", "b", "sources", "when"]), _DOC), max_size=6).map(
        lambda kv: "\n".join(f"{k}: {v}" for k, v in kv)
    ),
)
MEMORY_BOUND = 64 * 1024 * 1024


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_random_nested_yaml_gives_a_value_or_located_errors_within_bounds(text: str) -> None:
    tracemalloc.start()
    try:
        node, errors = parse_yaml(text, "fuzz.yaml")
        for e in errors:
            assert e.file == "fuzz.yaml"
            assert e.line >= 1
            assert e.column >= 1
        if node is not None:
            for spec in (CONFIG, PLAYBOOK_FILE):
                ctx = Context("fuzz.yaml", Path("/"))
                spec.load(node, ctx, "")
                assert all(e.line >= 1 for e in ctx.errors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


def _shape(node: Node) -> object:
    """A node tree as plain data with every tag and position, to compare two composers."""
    where = (node.tag, node.start_mark.line, node.start_mark.column)
    if isinstance(node, MappingNode):
        return (where, [(_shape(k), _shape(v)) for k, v in node.value])
    if isinstance(node, SequenceNode):
        return (where, [_shape(v) for v in node.value])
    return (where, node.value)


_PLAIN = st.recursive(
    st.sampled_from(
        ["lol", "1", "1.5", "true", "null", "~", "2s", '"q"', "'s'", "2026-01-01", "!!str 5"]
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), children), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "when", "steps"]), _PLAIN), max_size=5))
def test_the_bounded_composer_composes_as_pyyaml_does(items: list[tuple[str, str]]) -> None:
    text = "\n".join(f"{k}: {v}" for k, v in items) + "\n"
    try:
        expected = [_shape(n) for n in yaml.compose_all(text, Loader=yaml.SafeLoader)]
    except yaml.YAMLError:
        return
    assert [_shape(n) for n in _compose_all(text)] == expected
