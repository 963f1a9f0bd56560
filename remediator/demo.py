"""``make demo``: show the main job as far as it is built.

Today: the shipped example configuration validated as an operator would (`remediator check`),
then the same configuration with the mistakes people make, and the located errors they get.
The live demo (a sandboxed nginx + PHP-FPM broken under load and repaired) replaces this as
the daemon lands.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from remediator.cli import main as cli

REPO = Path(__file__).resolve().parent.parent

_MISTAKES = [
    (
        "playbooks.d/10-php-fpm-down.yaml",
        "  - name: restart php-fpm\n    restart:",
        "  - name: restart php-fpm\n    restrat:",
    ),
    ("playbooks.d/30-upstream-hung.yaml", "consecutive: 3", "consecutive: three"),
    ("playbooks.d/20-php-fpm-saturated.yaml", "window: 1m}", "window: 1 minute}"),
    ("remediator.yaml", "    interval: 5s\n", "    interval: 5s\n    intervall: 10s\n"),
]


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="remediator-demo-") as tmp:
        etc = Path(tmp) / "etc-remediator"
        shutil.copytree(REPO / "config", etc)
        for p in [etc, *etc.rglob("*")]:  # as an install would leave them: root-owned, 0644
            p.chmod(0o755 if p.is_dir() else 0o644)
        cfg = str(etc / "remediator.yaml")
        _say(f"remediator -c {cfg} check   (the shipped example)")
        rc = cli(["-c", cfg, "check"])
        if rc != 0:
            return rc
        for rel, old, new in _MISTAKES:
            f = etc / rel
            f.write_text(f.read_text().replace(old, new, 1))
        _say("the same config after four typical mistakes: every one reported, located")
        bad_rc = cli(["-c", cfg, "check"])
        print(f"(exit status {bad_rc}: 2 means bad configuration)")
        _say("editors can validate as you type: remediator schema > remediator.schema.json")
        return 0 if bad_rc == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
