"""Reading config must be safe whatever the file holds: no object construction, no traceback,
and files that others can write are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.load import load
from remediator.schema import format_duration, parse_duration
from remediator.yamlsrc import parse_yaml

VALID = "sources:\n  site: {type: probe, url: 'http://127.0.0.1/'}\n"


def _config(root: Path, text: str = VALID) -> Path:
    (root / "playbooks.d").mkdir(exist_ok=True)
    cfg = root / "remediator.yaml"
    cfg.write_text(text)
    cfg.chmod(0o644)
    return cfg


def test_python_tags_never_construct_objects(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    cfg = _config(tmp_path, f'sources: !!python/object/apply:os.system ["touch {canary}"]\n')
    loaded = load(cfg)
    assert not loaded.ok
    assert not canary.exists()
    assert "YAML tag '!!python/object/apply:os.system' is not allowed" in str(loaded.errors[0])


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_group_or_world_writable_config_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    cfg = _config(tmp_path)
    cfg.chmod(mode)
    loaded = load(cfg)
    assert loaded.config is None
    message = str(loaded.errors[0])
    assert f"(mode {mode:04o})" in message
    assert message.endswith(f"fix with: chmod go-w {cfg}")


def test_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    os.chown(cfg, 65534, 65534)  # tests run as root, as the daemon does
    loaded = load(cfg, uids=frozenset({0}))
    assert loaded.config is None
    assert "owned by uid 65534 (nobody), not root; fix with: chown root:" in str(loaded.errors[0])


def test_file_owned_by_the_daemons_own_user_is_accepted(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    os.chown(cfg, 65534, 65534)
    assert load(cfg, uids=frozenset({0, 65534})).ok


def test_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    real = _config(tmp_path)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    assert load(link).ok
    real.chmod(0o666)
    loaded = load(link)
    assert not loaded.ok
    assert "writable by group and others" in str(loaded.errors[0])


def test_world_writable_playbooks_directory_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "playbooks.d").chmod(0o777)
    loaded = load(cfg)
    assert not loaded.ok
    assert "playbooks.d:1:1: refusing to use it: writable by group and others" in str(
        loaded.all_errors()[0]
    )


def test_broken_playbook_file_disables_only_that_file(tmp_path: Path) -> None:
    cfg = _config(tmp_path, VALID + "services:\n  fpm: {kind: php-fpm, unit: php8.2-fpm.service}\n")
    good = "name: {n}\nwhen: {{probe_failing: site}}\nsteps: [restart: fpm]\n"
    (tmp_path / "playbooks.d" / "a.yaml").write_text(good.format(n="a"))
    (tmp_path / "playbooks.d" / "b.yaml").write_text(good.format(n="b") + "  - restrat: fpm\n")
    (tmp_path / "playbooks.d" / "c.yml").write_text(good.format(n="c"))
    (tmp_path / "playbooks.d" / "README").write_text("not a playbook\n")
    loaded = load(cfg)
    assert not loaded.ok
    assert [p.name for p in loaded.playbooks] == ["a", "c"]
    assert [f.path.name for f in loaded.files if not f.ok] == ["b.yaml"]
    assert any("README: ignored" in w for w in loaded.warnings)


def test_same_playbook_name_in_two_files_is_an_error_at_the_second(tmp_path: Path) -> None:
    cfg = _config(tmp_path, VALID + "services:\n  fpm: {kind: php-fpm, unit: x.service}\n")
    good = "name: dup\nwhen: {probe_failing: site}\nsteps: [restart: fpm]\n"
    (tmp_path / "playbooks.d" / "a.yaml").write_text(good)
    (tmp_path / "playbooks.d" / "b.yaml").write_text(good)
    errors = [str(e) for e in load(cfg).all_errors()]
    first = tmp_path / "playbooks.d" / "a.yaml"
    assert errors == [
        f"{tmp_path}/playbooks.d/b.yaml:1:7: name: playbook 'dup' is already defined at {first}:1"
    ]


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(
        tmp_path, "state_dir: state\nsources:\n  a: {type: access_log, path: logs/a.log}\n"
    )
    monkeypatch.chdir("/")
    loaded = load(cfg)
    assert loaded.config is not None
    assert loaded.config.state_dir == tmp_path / "state"
    assert loaded.config.sources["a"].path == tmp_path / "logs" / "a.log"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_parsing_arbitrary_text_never_raises(text: str) -> None:
    node, errors = parse_yaml(text, "fuzz.yaml")
    assert (node is None) == bool(errors)
    for e in errors:
        assert e.file == "fuzz.yaml" and e.line >= 1 and e.column >= 1


_yamlish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = ["sources", "services", "notifiers", "playbooks", "guards", "dry_run", "state_dir"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _yamlish, max_size=5))
def test_loading_arbitrary_structures_gives_errors_not_exceptions(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, object]
) -> None:
    import yaml  # noqa: PLC0415

    root = tmp_path_factory.mktemp("fuzz")
    cfg = _config(root, yaml.safe_dump(doc) if doc else "{}\n")
    loaded = load(cfg)
    for e in loaded.all_errors():
        assert e.line >= 1


@given(st.integers(min_value=0, max_value=10 * 86400 * 1000))
def test_duration_format_parses_back_to_the_same_value(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400), ("0", 0)],
)
def test_durations_operators_write(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "5 m", "m5", "1h30", "-1s", "1.s", "", "1h 30m", "5x"])
def test_malformed_durations_are_rejected(text: str) -> None:
    assert parse_duration(text) is None
