"""PHP-FPM's own status page as a source: how busy the pool is, from the pool itself.

Read as ``?json&full`` either over HTTP through the web server (``url:``) or straight from the
pool's socket over FastCGI (``socket:`` and ``path:``, the pool's ``pm.status_path``), which
needs no web server and works when the web server is the broken part.

The page is written by a pool worker (PHP-FPM's own C code, not PHP) from the scoreboard the
workers share with the master. The answer is treated as untrusted all the same (through the
web server, whatever the URL routes to could answer; through the socket, code running in a
worker could): sizes are capped, the JSON is parsed strictly (types, ranges, lengths), only
numbers are kept (no request URI, no text but the pool name and process manager, checked), and
nothing from it ever reaches a command.

The status request is served by a worker like any other request: a pool whose every worker is
busy or stopped cannot answer it. That is an answer too: a status request that connects but
gets no answer in time (or finds the listen backlog full) is the pool being unable to take a
new request (:class:`Failure` ``TIMEOUT``, ``BACKLOG_FULL``), which the conditions read.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remediator import escape
from remediator.sources import fastcgi
from remediator.sources.fastcgi import Failure
from remediator.sources.fpmprocs import PoolWatch, Workers
from remediator.trust import trusted_uids

if TYPE_CHECKING:
    from remediator.config import FpmStatusSource

MAX_ANSWER = 1024 * 1024  # a full status of ~2,500 workers; a pool that big is rare
MAX_WORKERS = 4096
MAX_COUNTER = 2**53
_QUERY = "json&full"
# A pool answers its status within a millisecond when a worker is free: one that has not
# answered by then has its workers looked at (a stopped pool is said at once).
LOOK_AFTER = 0.03
_UNANSWERED = frozenset({Failure.TIMEOUT, Failure.BACKLOG_FULL})
_POOL_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_MANAGERS = frozenset({"static", "dynamic", "ondemand"})
_IDLE = "Idle"
_FINISHING = "Finishing"  # the request is done; its duration is final
_NO_PROCESS = "(null)"  # how PHP-FPM 8.2 shows a scoreboard slot with no worker in it yet
_COUNTS = (
    "accepted conn",
    "listen queue",
    "max listen queue",
    "listen queue len",
    "idle processes",
    "active processes",
    "total processes",
    "max active processes",
    "max children reached",
)


class Refused(ValueError):
    """An answer that is not a status page this source will believe: said why, in one line."""


@dataclass(frozen=True, slots=True)
class FpmStatus:
    """The numbers kept from one status page. ``busy`` and ``idle`` leave out the worker that
    served this very request; ``youngest_busy``/``oldest_busy`` are the ages (seconds) of the
    requests the other busy workers are on (None when none is busy)."""

    pool: str
    manager: str
    listen_queue: int
    idle: int
    busy: int
    total: int
    max_children_reached: int
    slow_requests: int
    youngest_busy: float | None
    oldest_busy: float | None
    # (pid, its request count, the duration of its last request) of each worker whose request
    # is done (idle or finishing): how long this pool's requests take. Not compared: a status
    # that differs only in these changes no verdict (it wakes nothing, see fpmwatch)
    done: tuple[tuple[int, int, float], ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class FpmResult:
    """One read: the status, or why there is none (``failure``), and how long it took;
    ``workers``: the pool's workers as ``/proc`` showed them when it went unanswered."""

    status: FpmStatus | None
    failure: Failure | None
    detail: str
    elapsed: float
    workers: Workers | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None


def _counter(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int or not 0 <= value < MAX_COUNTER:
        raise Refused(f"'{key}' is not a count")
    return value


def _no_constants(name: str) -> Any:
    raise Refused(f"{name} is not a number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Refused("a key appears twice")
    return out


def parse(body: bytes, status_path: str) -> FpmStatus:
    """The numbers of a ``json&full`` status page; :class:`Refused` with the reason otherwise."""
    if len(body) > MAX_ANSWER:
        raise Refused(f"answer larger than {MAX_ANSWER} bytes")
    try:
        doc = json.loads(
            body.decode("utf-8"),
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError as exc:
        raise Refused("answer is not UTF-8") from exc
    except RecursionError as exc:
        raise Refused("answer nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise Refused(f"not JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(doc, dict):
        raise Refused("not a JSON object")
    pool, manager = doc.get("pool"), doc.get("process manager")
    if not isinstance(pool, str) or not _POOL_NAME.fullmatch(pool):
        raise Refused("'pool' is not a pool name")
    if manager not in _MANAGERS:
        raise Refused("'process manager' is not static, dynamic or ondemand")
    counts = {k: _counter(doc, k) for k in _COUNTS}
    slow = _counter(doc, "slow requests")
    total = counts["total processes"]
    if counts["active processes"] > total or counts["idle processes"] > total:
        raise Refused("more active or idle processes than processes")
    procs = doc.get("processes")
    if not isinstance(procs, list) or len(procs) > MAX_WORKERS:
        raise Refused("'processes' is not the list of the pool's processes (json&full)")
    ages: list[float] = []
    done: list[tuple[int, int, float]] = []
    idle = 0
    ours: float | None = None
    for proc in procs:
        state, age, uri = _process(proc)
        if state == _NO_PROCESS:  # a slot whose worker is still being spawned
            continue
        status_request = uri.partition("?")[0] == status_path
        if state in (_IDLE, _FINISHING) and not status_request:
            one = _done(proc, age)
            if one is not None:
                done.append(one)
        if state == _IDLE:
            idle += 1
        elif status_request:
            # a status request (this one, the one before it still finishing, another
            # monitor's): served in microseconds, not load; all but this one's worker are
            # as good as idle
            if ours is not None:
                idle += 1
            ours = age if ours is None else min(ours, age)
        else:
            ages.append(age)
    return FpmStatus(
        pool=pool,
        manager=str(manager),
        listen_queue=counts["listen queue"],
        idle=idle,
        busy=len(ages),
        total=total,
        max_children_reached=counts["max children reached"],
        slow_requests=slow,
        youngest_busy=min(ages) if ages else None,
        oldest_busy=max(ages) if ages else None,
        done=tuple(done),
    )


def _done(proc: dict[str, Any], duration: float) -> tuple[int, int, float] | None:
    """(pid, requests, duration) of a worker whose request is done; None without a PID and a
    count to tell its requests apart (then it only goes unmeasured)."""
    pid, requests = proc.get("pid"), proc.get("requests")
    if type(pid) is not int or not 0 < pid < 2**22:
        return None
    if type(requests) is not int or not 0 <= requests < MAX_COUNTER:
        return None
    return pid, requests, duration


def _process(proc: Any) -> tuple[str, float, str]:
    if not isinstance(proc, dict):
        raise Refused("a process entry is not an object")
    state, duration, uri = proc.get("state"), proc.get("request duration"), proc.get("request uri")
    if not isinstance(state, str) or not 0 < len(state) <= 40:
        raise Refused("a process 'state' is not a state")
    if type(duration) is not int or not 0 <= duration < MAX_COUNTER:
        raise Refused("a process 'request duration' is not a duration")
    if not isinstance(uri, str):
        raise Refused("a process 'request uri' is not text")
    return state, duration / 1e6, uri


def _headers_and_body(stdout: bytes) -> tuple[dict[str, str], bytes]:
    """A CGI answer: header lines, a blank line, the body."""
    head, sep, body = stdout.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = stdout.partition(b"\n\n")
    if not sep or len(head) > 8192:
        raise Refused("no CGI headers in the answer")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise Refused("a malformed CGI header")
        headers[name.strip().lower()] = value.strip()
    return headers, body


class StatusReader:
    """Reads one configured ``fpm_status`` source; a fresh connection every time."""

    def __init__(self, name: str, spec: FpmStatusSource, workers: PoolWatch | None = None) -> None:
        self.name = name
        self.spec = spec
        self.path = spec.status_path
        self._workers = workers
        self._pool: str | None = None  # its name, from its last answer
        self._seen: Workers | None = None  # this read's last look at the workers
        self._request = fastcgi.build_request(
            {
                "GATEWAY_INTERFACE": "CGI/1.1",
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": self.path,
                "SCRIPT_FILENAME": self.path,
                "REQUEST_URI": f"{self.path}?{_QUERY}",
                "QUERY_STRING": _QUERY,
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": "remediator",
                "REMOTE_ADDR": "127.0.0.1",
            }
        )
        if spec.url is not None:
            parts = urllib.parse.urlsplit(spec.url)
            self._https = parts.scheme == "https"
            self._host = parts.hostname or "localhost"
            self._port = parts.port or (443 if self._https else 80)
            self._target = f"{parts.path or '/'}?{_QUERY}"

    def read(self) -> FpmResult:
        start = time.monotonic()
        self._forget_look()
        try:
            url, sock = self.spec.url, self.spec.socket or ""
            body = self._http() if url is not None else self._fastcgi(sock)
            status = parse(body, self.path)
        except fastcgi.FastCGIError as exc:
            failure, detail = exc.failure, exc.detail
            if failure in _UNANSWERED:
                with contextlib.suppress(fastcgi.FastCGIError):
                    self._look()
            seen = self._seen
            if seen is not None and seen.all_stopped and failure in _UNANSWERED:
                failure, detail = Failure.STOPPED, _stopped(self._pool, seen)
            return FpmResult(None, failure, detail, time.monotonic() - start, seen)
        except Refused as exc:
            return FpmResult(None, Failure.PROTOCOL, f"refused: {exc}", time.monotonic() - start)
        if self._workers is not None:
            self._workers.forget()
        self._pool = status.pool
        return FpmResult(status, None, _summary(status), time.monotonic() - start)

    def _forget_look(self) -> None:
        self._seen = None

    def _look(self) -> None:
        """Look at the pool's workers (no answer yet); every one stopped ends the read."""
        if self._workers is None:
            return
        seen = self._workers.look(self._pool, time.monotonic())
        self._seen = seen
        if seen is not None and seen.all_stopped:
            raise fastcgi.FastCGIError(Failure.STOPPED, _stopped(self._pool, seen))

    def _fastcgi(self, sock: str) -> bytes:
        answer = fastcgi.request(
            sock,
            self._request,
            timeout=self.spec.read_timeout,
            max_bytes=MAX_ANSWER,
            listener_uids=trusted_uids(),
            on_wait=None if self._workers is None else (LOOK_AFTER, self._look),
        )
        headers, body = _headers_and_body(answer.stdout)
        code = headers.get("status", "200").split(" ", 1)[0]
        if code != "200":
            # the pool's own words ("Primary script unknown"), made one safe line
            why = escape.text(answer.stderr[:80].decode("utf-8", "replace").strip())
            raise Refused(
                f"status {code[:3]!r} from the pool (is '{self.path}' its pm.status_path?)"
                + (f": {why}" if why else "")
            )
        _json_type(headers.get("content-type", ""))
        return body

    def _http(self) -> bytes:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        deadline = time.monotonic() + self.spec.read_timeout
        conn = cls(self._host, self._port, timeout=self.spec.read_timeout)
        try:
            conn.request(
                "GET",
                self._target,
                headers={"User-Agent": "remediator-fpm-status", "Connection": "close"},
            )
            _deadline(conn, deadline)
            resp = conn.getresponse()
            if resp.status != 200:
                raise fastcgi.FastCGIError(Failure.ERROR, f"status {resp.status}")
            _json_type(resp.getheader("Content-Type", "") or "")
            length = resp.getheader("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_ANSWER):
                raise Refused(f"answer larger than {MAX_ANSWER} bytes")
            body = b""
            while True:
                _deadline(conn, deadline)
                chunk = resp.read1(MAX_ANSWER + 1 - len(body))
                if not chunk:
                    return body
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise Refused(f"answer larger than {MAX_ANSWER} bytes")
        except TimeoutError as exc:
            raise fastcgi.FastCGIError(
                Failure.TIMEOUT, f"no answer within {self.spec.read_timeout:g}s"
            ) from exc
        except ConnectionRefusedError as exc:
            raise fastcgi.FastCGIError(Failure.REFUSED, "connection refused") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise fastcgi.FastCGIError(Failure.ERROR, type(exc).__name__) from exc
        finally:
            conn.close()


def _json_type(content_type: str) -> None:
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Refused("the answer is not JSON (is the query json&full honoured?)")


def _deadline(conn: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _stopped(pool: str | None, seen: Workers) -> str:
    return f"no answer: every worker of pool {pool or '?'} is stopped ({seen.count}, state T)"


def _summary(s: FpmStatus) -> str:
    oldest = "" if s.oldest_busy is None else f", oldest request {_secs(s.oldest_busy)}"
    return (
        f"pool {s.pool}: {s.busy} busy, {s.idle} idle of {s.total}, "
        f"listen queue {s.listen_queue}{oldest}"
    )


def _secs(x: float) -> str:
    return f"{x:.1f}s" if math.isfinite(x) else "?"
