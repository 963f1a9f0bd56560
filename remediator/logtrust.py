"""Who besides root can write the logs remediator reads (``check`` and ``status`` say so).

A line in a log is only as trustworthy as the least trusted user who can write the file, or
replace it in its directory. Debian's logrotate recreates nginx's logs as
``www-data adm 0640``, and nginx's own reopen (``invoke-rc.d nginx rotate``, SIGUSR1) hands
them to its worker user whatever logrotate created: a compromised PHP app (www-data) can
append forged lines. Corroboration (``remediator.corroborate``) is what stands between such
lines and an action; these warnings say where it is needed, with the fix.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from remediator.config import AccessLogSource, Config, ErrorLogSource

LOGROTATE_DIR = Path("/etc/logrotate.d")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name}"
    except KeyError:
        return f"gid {gid}"


def writers(st: os.stat_result, *, directory: bool = False) -> list[str]:
    """Who other than root may write a file (or, for a directory, replace what is in it)."""
    out = []
    if st.st_uid != 0:
        out.append(_user(st.st_uid))  # an owner can always chmod its file writable
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        out.append(_group(st.st_gid))
    sticky = directory and st.st_mode & stat.S_ISVTX
    if st.st_mode & stat.S_IWOTH and not sticky:
        out.append("everyone")
    return out


def _server(src: AccessLogSource | ErrorLogSource) -> str:
    if isinstance(src, AccessLogSource):
        if src.apache_format is not None:
            return "Apache"
        fmt = "nginx" if src.log_format is not None else src.format_name
    else:
        fmt = src.format
    name = fmt.split("-", 1)[0]
    return {"apache": "Apache", "php": "PHP-FPM"}.get(name, name)


def _logrotate_rule(path: Path, rules_dir: Path) -> Path | None:
    """The logrotate file that names ``path`` or its directory, if there is one."""
    try:
        rules = sorted(rules_dir.iterdir())
    except OSError:
        return None
    wanted = (str(path), f"{path.parent}/")
    for rule in rules:
        try:
            text = rule.read_text(errors="replace")
        except OSError:
            continue
        if any(w in text for w in wanted):
            return rule
    return None


def _fix(server: str, path: Path, rules_dir: Path) -> str:
    rule = _logrotate_rule(path, rules_dir)
    where = f"in {rule}" if rule else "in the logrotate rule that recreates it"
    fix = f"`create 0640 root adm` {where}"
    if server == "nginx":
        # nginx's reopen (SIGUSR1, `invoke-rc.d nginx rotate`) chowns its logs to its worker
        # user whatever logrotate created; a reload (SIGHUP) reopens them as root and does not.
        fix += ", and reload nginx in its postrotate (`invoke-rc.d nginx reload`) instead of "
        fix += "`invoke-rc.d nginx rotate`, whose reopen hands the files back to www-data"
    return fix


def warnings(config: Config, *, rules_dir: Path = LOGROTATE_DIR) -> list[str]:
    """One line per log source that someone other than root can write or replace."""
    out = []
    for name, src in config.sources.items():
        if not isinstance(src, AccessLogSource | ErrorLogSource):
            continue
        kind = "access log" if isinstance(src, AccessLogSource) else "error log"
        server = _server(src)
        what = f"{server} {kind} {src.path} (source {name})"
        try:
            file_writers = writers(src.path.stat())
            dir_writers = writers(src.path.parent.stat(), directory=True)
        except OSError:
            continue  # missing or unreadable: the source reports itself blind
        found = []
        if file_writers:
            found.append(f"is writable by {' and '.join(file_writers)}")
        if dir_writers:
            found.append(
                f"is in a directory {' and '.join(dir_writers)} can write (and replace it)"
            )
        if not found:
            continue
        who = " or ".join(dict.fromkeys([*file_writers, *dir_writers]))
        fixes = [_fix(server, src.path, rules_dir)] if file_writers else []
        if dir_writers:
            d = src.path.parent
            fixes.append(f"`chown root {d}` and `chmod go-w {d}`")
        out.append(
            f"{what} {'; it '.join(found)}: anyone who runs code as {who} can forge lines; "
            f"corroboration is what stands between them and an action "
            f"(fix: {'; '.join(fixes)})"
        )
    return out
