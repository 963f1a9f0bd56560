"""Fixtures for the real web stack (tests/stack.py) and a namespaced systemd (tests/sysd.py).

- ``stack``: a :class:`tests.stack.Stack` that starts PhpFpm / Nginx / Apache instances with any
  options and kills them all at teardown (also when the test failed).
- ``fpm``: a started :class:`PhpFpm` (static pool, 2 workers). Options by indirect
  parametrization: ``@pytest.mark.parametrize("fpm", [{"listen_backlog": 1}], indirect=True)``.
- ``nginx_fpm``: a started :class:`Nginx` in front of ``fpm`` (same instance as the ``fpm``
  fixture; ``nginx_fpm.fpm`` too). Options the same way.
- ``apache_fpm``: a started :class:`Apache` (proxy_fcgi) in front of ``fpm``.
- ``daemons``: a list the test appends its :class:`tests.e2e.DaemonProcess` instances to; they
  are SIGKILLed before the servers are cleaned up.
- ``systemd_host``: a :class:`BootedSystemd`, booted once per module; skipped with the reason when
  a namespaced systemd cannot run on this machine, or failed with it when the run requires one
  (``REMEDIATOR_REQUIRE=systemd``, as ``make test`` sets: tests/require.py). Tests sharing it
  undo what they start.

When a test fails, the tails of every log of the servers it used are added to its report.

Temporary directories (``tmp_path``) live under ``~/.cache/remediator-tests/``, not /tmp:
remediator refuses config in a directory others can write, and /tmp (1777) is one. The home
directory is the tester's own (root's, for the suite), which the config loader trusts as an
operator's /etc/remediator; :func:`_trusted_tmp` says so when it is not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from remediator import trust
from tests import sysd
from tests.e2e import DaemonProcess
from tests.require import lacking, required
from tests.stack import Apache, Nginx, PhpFpm, Stack, tail

TRUSTED_TMP = Path.home() / ".cache" / "remediator-tests"

_SERVERS = pytest.StashKey[list[PhpFpm | Nginx | Apache]]()


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    param = getattr(request, "param", None)
    return dict(param) if param else {}


def pytest_configure(config: pytest.Config) -> None:
    try:
        required()  # a misspelt REMEDIATOR_REQUIRE must not quietly require nothing
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    _trusted_tmp()


def _trusted_tmp() -> None:
    """Point pytest's temp root (``PYTEST_DEBUG_TEMPROOT``, read when the first ``tmp_path``
    is made) at :data:`TRUSTED_TMP`, a directory the config loader trusts."""
    TRUSTED_TMP.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        trust.trusted_dir(TRUSTED_TMP, trust.trusted_uids())
    except (trust.Untrusted, OSError) as exc:
        raise pytest.UsageError(
            f"{TRUSTED_TMP}: the tests keep their config files here, and it is not trusted "
            f"as config: {exc}"
        ) from None
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(TRUSTED_TMP)


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """CLI commands configure structlog for the process (replay quiets it to errors): undo
    that after each test, so a later test that captures log events sees them."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    servers = Stack()
    request.node.stash[_SERVERS] = servers.servers
    try:
        yield servers
    finally:
        servers.cleanup()


@pytest.fixture
def daemons(stack: Stack) -> Iterator[list[DaemonProcess]]:
    """Daemons the test started (append them), SIGKILLed before the servers are cleaned up."""
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for d in started:
            d.kill()


@pytest.fixture
def fpm(stack: Stack, request: pytest.FixtureRequest) -> PhpFpm:
    return stack.fpm(**_options(request))


@pytest.fixture
def nginx_fpm(stack: Stack, fpm: PhpFpm, request: pytest.FixtureRequest) -> Nginx:
    return stack.nginx(fpm, **_options(request))


@pytest.fixture
def apache_fpm(stack: Stack, fpm: PhpFpm, request: pytest.FixtureRequest) -> Apache:
    return stack.apache(fpm, **_options(request))


@pytest.fixture(scope="module")
def systemd_host() -> Iterator[sysd.BootedSystemd]:
    reason = sysd.available()
    if reason is not None:
        lacking("systemd", reason)
    host = sysd.BootedSystemd()
    try:
        host.start()
        yield host
    finally:
        host.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for server in item.stash.get(_SERVERS, []):
        for name, path in server.logs().items():
            report.sections.append((f"{name} ({path})", tail(path)))
    host = getattr(item, "funcargs", {}).get("systemd_host")
    if isinstance(host, sysd.BootedSystemd) and host.running:
        with contextlib.suppress(Exception):
            report.sections.append(("namespaced systemd journal", host.journal(lines=60)))
