"""Which files root may take orders from: sshd's StrictModes for config, secrets and programs.

A file is trusted when nobody but root (or the daemon's own user) can change what it holds:

* the path is resolved once, component by component from ``/``: every directory walked through
  (those that hold a symlink followed on the way included) must be owned by a trusted uid and not
  writable by group or others. A sticky world-writable directory such as ``/tmp`` is refused too:
  someone else may create the name before root does;
* the resolved path is opened once (``O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC``: no symlink swapped in
  afterwards, no FIFO to hang on), owner and mode are judged on the open descriptor (``fstat``),
  and the bytes are read from that same descriptor: what was judged is what is read.

Problems come back as short sentences that end with the fix; callers locate them.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from remediator.pathwalk import components

MAX_SYMLINKS = 40  # as the kernel's ELOOP
# Where the programs of ``command`` actions are looked up: systemd's default PATH, fixed, never
# the daemon's (or the operator's shell's) environment.
PROGRAM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Untrusted(Exception):
    """Why a path may not be used, ending with the fix; ``str()`` is the whole sentence."""


def trusted_uids() -> frozenset[int]:
    """Owners whose files we accept: root and the user the daemon runs as."""
    return frozenset({0, os.geteuid()})


@dataclass(frozen=True)
class Resolved:
    """A path resolved through trusted directories: where it really is, and the links followed."""

    path: Path
    links: tuple[tuple[Path, str], ...] = ()

    def via(self) -> str:
        """`` (through the symlink A -> B)`` when links were followed, for messages."""
        if not self.links:
            return ""
        link, target = self.links[0]
        return f" (through the symlink {link} -> {target})"


def quote(text: str | Path) -> str:
    """``text`` as a shell word, for the fix an operator copies."""
    text = str(text)
    if text and all(c.isalnum() or c in "/._-+:@" for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def resolve(path: Path, uids: frozenset[int]) -> Resolved:
    """Resolve ``path`` (absolute) without trusting any directory a stranger can write.

    Raises :class:`Untrusted` (or ``OSError`` for a missing component) when it cannot.
    """
    if not path.is_absolute():
        raise ValueError(f"not an absolute path: {path}")
    current = Path("/")
    _judge_dir(current, os.lstat(current), uids, Resolved(current))
    links: list[tuple[Path, str]] = []
    for c in components(path, MAX_SYMLINKS):
        if c.target is not None:
            links.append((c.path, str(c.target)))
            continue
        if not c.last:  # a directory we walk through
            if not stat.S_ISDIR(c.st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(c.path))
            _judge_dir(c.path, c.st, uids, Resolved(c.path, tuple(links)))
        current = c.path
    return Resolved(current, tuple(links))


def _judge_dir(path: Path, st: os.stat_result, uids: frozenset[int], how: Resolved) -> None:
    mode = stat.S_IMODE(st.st_mode)
    writable = _who(mode & 0o022)
    owner = st.st_uid not in uids
    if not writable and not owner:
        return
    q = quote(path)
    if writable and mode & stat.S_ISVTX:
        raise Untrusted(
            f"its directory {path} is writable by {writable} (mode {mode:04o}, sticky): "
            f"another user may create the name before root does{how.via()}; "
            "fix: move it to a directory only root can write, such as /etc/remediator"
        )
    problems = []
    if writable:
        problems.append(f"writable by {writable} (mode {mode:04o})")
    if owner:
        problems.append(f"owned by {_user(st.st_uid)}, not root")
    raise Untrusted(
        f"its directory {path} is {' and '.join(problems)}: whoever can write it can replace "
        f"the file{how.via()}; fix with: chown root: {q} && chmod go-w {q}"
    )


def _who(bits: int) -> str:
    who = [w for w, b in (("group", 0o070), ("others", 0o007)) if bits & b]
    return " and ".join(who)


def _user(uid: int) -> str:
    import pwd  # noqa: PLC0415 - only for messages

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def read_judged(
    path: Path,
    uids: frozenset[int] | None,
    *,
    max_bytes: int,
    secret: bool = False,
    how: Resolved | None = None,
) -> tuple[bytes, os.stat_result]:
    """Open ``path`` once (no symlink, no FIFO), judge the descriptor, read from it.

    The half of :func:`read_file` that holds the race: the parents are the caller's business.
    ``uids`` None judges only the kind of file (a regular one), not its owner and mode.
    ``secret``: group and others may not read it either (group read only for group root).
    Raises :class:`Untrusted`, or ``OSError`` when it cannot be opened (ELOOP: a symlink).
    """
    how = how or Resolved(path)
    fd = os.open(path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(
                f"not a regular file{how.via()}; fix with: make {quote(path)} a plain file"
            )
        if uids is not None:
            _judge_file(path, st, uids, secret=secret, how=how)
        if st.st_size > max_bytes:
            raise Untrusted(f"larger than {_size(max_bytes)} ({st.st_size} bytes): is it config?")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise Untrusted(f"larger than {_size(max_bytes)}: is it config?")
        return data, st
    finally:
        os.close(fd)


def _judge_file(
    path: Path, st: os.stat_result, uids: frozenset[int], *, secret: bool, how: Resolved
) -> None:
    mode = stat.S_IMODE(st.st_mode)
    q = quote(path)
    if st.st_uid not in uids:
        raise Untrusted(
            f"owned by {_user(st.st_uid)}, not root{how.via()}; fix with: chown root: {q} && "
            f"chmod {'0600' if secret else 'go-w'} {q}"
        )
    writable = _who(mode & 0o022)
    if writable:
        raise Untrusted(
            f"writable by {writable} (mode {mode:04o}){how.via()}; fix with: chmod go-w {q}"
        )
    if secret:
        readable = _who(mode & (0o004 if st.st_gid == 0 else 0o044))
        if readable:
            raise Untrusted(
                f"it holds secrets but is readable by {readable} (mode {mode:04o}, "
                f"group {st.st_gid}); fix with: chown root:root {q} && chmod 0600 {q}"
            )


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def read_file(
    path: Path, uids: frozenset[int] | None, *, max_bytes: int, secret: bool = False
) -> tuple[bytes, os.stat_result, Resolved]:
    """Resolve ``path`` through trusted directories, then :func:`read_judged` it.

    ``uids`` None: a file whose trust is not the question (a hint read for ``status``): the
    parents are not judged, only the kind of file.
    Raises :class:`Untrusted` or ``OSError``.
    """
    path = Path(os.path.abspath(path))  # noqa: PTH100 - no symlink resolution here
    if uids is None:
        real = Path(os.path.realpath(path))
        data, st = read_judged(real, None, max_bytes=max_bytes)
        return data, st, Resolved(real)
    how = resolve(path, uids)
    data, st = read_judged(how.path, uids, max_bytes=max_bytes, secret=secret, how=how)
    return data, st, how


def trusted_dir(path: Path, uids: frozenset[int]) -> Resolved:
    """``path`` resolved, a directory, owned by a trusted uid, writable by nobody else.

    Raises :class:`Untrusted` or ``OSError``.
    """
    how = resolve(Path(os.path.abspath(path)), uids)  # noqa: PTH100
    fd = os.open(how.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    mode = stat.S_IMODE(st.st_mode)
    q = quote(how.path)
    if st.st_uid not in uids or mode & 0o022:
        what = (
            f"owned by {_user(st.st_uid)}, not root"
            if st.st_uid not in uids
            else f"writable by {_who(mode & 0o022)} (mode {mode:04o})"
        )
        raise Untrusted(
            f"{what}: whoever can write it can add or replace files{how.via()}; "
            f"fix with: chown root: {q} && chmod go-w {q}"
        )
    return how


def trusted_file(path: Path, uids: frozenset[int]) -> tuple[Resolved, os.stat_result]:
    """``path`` (absolute) resolved through trusted directories, a regular file owned by a
    trusted uid and writable by nobody else, judged on a descriptor opened once.

    Raises :class:`Untrusted` or ``OSError``.
    """
    how = resolve(path, uids)
    st = _fstat_regular(how, f"not a regular file{how.via()}")
    _judge_file(how.path, st, uids, secret=False, how=how)
    return how, st


def _fstat_regular(how: Resolved, problem: str) -> os.stat_result:
    """``fstat`` of ``how.path`` opened once (no symlink, no FIFO); ``problem`` when it is
    not a regular file."""
    fd = os.open(how.path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Untrusted(problem)
    return st


def program(name: str, base_dir: Path, uids: frozenset[int]) -> Path:
    """The absolute path of the program ``name`` (looked up in :data:`PROGRAM_PATH` when it
    has no ``/``, else taken from ``base_dir``), which must be trusted like config: resolved
    through trusted directories, a regular executable file owned by a trusted uid, writable by
    nobody else. The path returned is the one found (argv[0] keeps its name), not the target of
    its symlinks; every link on the way sits in a trusted directory, so it cannot change.

    Raises :class:`Untrusted` or ``OSError``.
    """
    if "/" in name:
        found = Path(os.path.normpath(base_dir / name))
    else:
        candidates = (Path(d) / name for d in PROGRAM_PATH)
        hit = next((c for c in candidates if os.path.lexists(c)), None)
        if hit is None:
            raise Untrusted(
                f"program '{name}' is not in {':'.join(PROGRAM_PATH)}; fix with: give its absolute path"
            )
        found = hit
    how = resolve(found, uids)
    st = _fstat_regular(how, f"{found} is not a regular file{how.via()}")
    try:
        _judge_file(how.path, st, uids, secret=False, how=how)
    except Untrusted as exc:
        raise Untrusted(f"program {found}: {exc}") from None
    if not st.st_mode & 0o111:
        raise Untrusted(
            f"program {found} is not executable; fix with: chmod 0755 {quote(how.path)}"
        )
    return found
