"""An engine wired as the daemon wires it (remediator.wiring), on a config written by the test,
with a real state dir and action log in ``tmp_path`` and the test's own action functions."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from remediator.actionlog import ActionLog
from remediator.guards import Guards
from remediator.load import Loaded, load
from remediator.system import System
from remediator.wiring import Wiring, wire


def load_text(tmp_path: Path, text: str) -> Loaded:
    """``text`` (dedented) as ``tmp_path/r.yaml`` beside an empty ``playbooks.d``, loaded."""
    cfg = tmp_path / "r.yaml"
    cfg.write_text(textwrap.dedent(text))
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    return load(cfg)


def wired(tmp_path: Path, text: str, actions: dict[str, Any], *, probes: bool = True) -> Wiring:
    """The wiring of config ``text``; the action log is ``tmp_path/actions.jsonl``."""
    loaded = load_text(tmp_path, text)
    assert loaded.ok and loaded.config is not None, loaded.all_errors()
    return wire(
        loaded.config,
        loaded.playbooks,
        system=System(),
        guards=Guards(tmp_path / "state", loaded.config.guards, 0),
        actionlog=ActionLog(tmp_path / "actions.jsonl", journal=False),
        actions=actions,
        probes=probes,
    )
