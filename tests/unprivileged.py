"""Run this checkout's Python code as ``nobody``, wherever the checkout and its venv live.

The venv's interpreter, its site-packages and the checkout may sit where ``nobody`` cannot go: a
checkout under ``/root`` (mode 0700 on Debian, where the README's quick start puts a root user),
an interpreter under pyenv's ``/root/.pyenv``. So :class:`NobodyPython` copies the modules a
script needs (and all they import that is not the standard library) into a directory anyone can
read, and runs them with an interpreter of the same version that anyone can execute, with ``-S``
(no site: neither the venv nor the system's dist-packages) and ``PYTHONPATH`` at that copy.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.closing import Closing

NOBODY = 65534
DROP = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"

# Run by this venv's interpreter: which top-level modules, not in the standard library, importing
# argv[1:] brings in, and where each lives (a package's directory or a module's file).
_FIND = """
import importlib, json, os, sys
from pathlib import Path
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
std = [Path(os.__file__).resolve().parent]  # (sysconfig's platstdlib is the venv's lib/)
found = {}
for name in sorted(set(sys.modules) - before):
    mod = sys.modules[name]
    if "." in name or name in sys.builtin_module_names:
        continue
    paths = [Path(mod.__file__)] if getattr(mod, "__file__", None) else []
    paths = [p.parent if p.name == "__init__.py" else p for p in paths]
    paths += [Path(p) for p in getattr(mod, "__path__", [])]  # namespace packages too
    paths = {str(p.resolve()) for p in paths}
    if paths and not any(s == Path(p) or s in Path(p).parents for p in paths for s in std):
        found[name] = sorted(paths)
print(json.dumps(found))
"""


def _reachable_by_others(path: Path) -> bool:
    """Whether a user with no group in common can execute ``path`` (every parent searchable)."""
    try:
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) and mode & stat.S_IXOTH):
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def interpreter() -> Path:
    """An interpreter of this one's version that anyone may run: this one's own when it is
    reachable, else the system's ``python3.X``."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    candidates = [
        Path(base).resolve(),
        Path("/usr/bin") / version,
        Path("/usr/local/bin") / version,
    ]
    for candidate in candidates:
        if _reachable_by_others(candidate):
            return candidate
    raise RuntimeError(f"no {version} that an unprivileged user can run: tried {candidates}")


def _open_to_all(root: Path) -> None:
    """a+rX on ``root`` and everything under it."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = 0o555 if stat.S_ISDIR(mode) else 0o444
        path.chmod(stat.S_IMODE(mode) | extra)


class NobodyPython(Closing):
    """A directory with copies of ``modules`` and their imports, and an interpreter to run
    scripts there as ``nobody`` (as the current user when it is not root). Removed on exit."""

    def __init__(self, modules: Iterable[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="remediator-nobody-py-"))
        self.lib = self.dir / "lib"
        self.python = interpreter()
        try:
            self._copy(list(modules))
            _open_to_all(self.dir)
        except BaseException:
            self.remove()
            raise

    def _copy(self, modules: list[str]) -> None:
        res = subprocess.run(
            [sys.executable, "-c", _FIND, *modules],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found: dict[str, list[str]] = json.loads(res.stdout)
        self.lib.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name, paths in found.items():
            for raw in paths:
                src = Path(raw)
                if src.is_dir():
                    shutil.copytree(src, self.lib / name, ignore=ignore, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, self.lib / src.name)

    def run(
        self, args: Sequence[str], timeout: float = 60.0, *, drop: Sequence[str] = DROP
    ) -> subprocess.CompletedProcess[str]:
        """``python -S ARGS`` in the copy's directory, as nobody when we are root (or as the user
        another ``drop`` prefix, such as ``setpriv --reuid=...``, switches to)."""
        prefix = list(drop) if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, str(self.python), "-S", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            env={
                "PATH": _ENV_PATH,
                "LANG": "C.UTF-8",
                "PYTHONPATH": str(self.lib),
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            check=False,
        )

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        self.remove()
