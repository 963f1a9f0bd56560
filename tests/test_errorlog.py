"""Error-log classifiers: causes, local times, evidence, and text a client chose."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.causes import Cause
from remediator.sources import formats
from remediator.sources.errorlog import ERROR_FORMATS

NGINX = ERROR_FORMATS["nginx-error"]
FPM = ERROR_FORMATS["php-fpm"]
APACHE = ERROR_FORMATS["apache-error"]
SOCK = b"unix:/run/php/php8.2-fpm.sock"
CTX = b', client: 127.0.0.1, server: , request: "GET /index.php HTTP/1.1"'
UP = b', upstream: "fastcgi://' + SOCK + b':", host: "localhost"'
NX = b"2026/11/24 09:26:23 [error] 1203#1203: *7 "
FP = b"[24-Nov-2026 09:26:55] WARNING: [pool www] "
AP = b"[Tue Nov 24 09:40:08.720813 2026] [proxy:error] [pid 311:tid 318] "
UTC = dt.UTC


def test_registry_has_exactly_the_three_dialects() -> None:
    assert set(ERROR_FORMATS) == {"nginx-error", "apache-error", "php-fpm"}


def test_registry_names_match_the_names_the_config_accepts() -> None:
    assert set(ERROR_FORMATS) == set(formats.ERROR_FORMATS)


@pytest.mark.parametrize("fmt", ERROR_FORMATS.values(), ids=lambda f: f.name)
def test_every_dialect_has_a_one_line_description(fmt: object) -> None:
    desc = getattr(fmt, "description", "")
    assert desc
    assert "\n" not in desc


NGINX_CASES = [
    (b"connect() to " + SOCK + b" failed (111: Connection refused) while connecting to upstream",
     Cause.UPSTREAM_REFUSED),
    (b"connect() failed (111: Connection refused) while connecting to upstream",
     Cause.UPSTREAM_REFUSED),
    (b"connect() to " + SOCK + b" failed (2: No such file or directory) while connecting to "
     b"upstream", Cause.UPSTREAM_MISSING),
    (b"connect() to " + SOCK + b" failed (11: Resource temporarily unavailable) while "
     b"connecting to upstream", Cause.UPSTREAM_OVERLOADED),
    (b"upstream timed out (110: Connection timed out) while reading response header from "
     b"upstream", Cause.UPSTREAM_TIMEOUT),
    (b"recv() failed (104: Connection reset by peer) while reading response header from "
     b"upstream", Cause.UPSTREAM_RESET),
    (b"readv() failed (104: Connection reset by peer) while reading upstream",
     Cause.UPSTREAM_RESET),
    (b"upstream prematurely closed connection while reading response header from upstream",
     Cause.UPSTREAM_CLOSED),
    (b"no live upstreams while connecting to upstream", Cause.NO_LIVE_UPSTREAMS),
    (b"backend.internal could not be resolved (3: Host not found)", Cause.DNS_FAILURE),
    (b"open() \"/var/www/html/favicon.ico\" failed (2: No such file or directory)", None),
    (b"client sent invalid method while reading client request line", None),
]  # fmt: skip


@pytest.mark.parametrize(("message", "cause"), NGINX_CASES)
def test_nginx_messages_name_their_cause(message: bytes, cause: Cause | None) -> None:
    assert NGINX.classify(NX + message + CTX + UP) is cause


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        (b'nginx: [emerg] unknown directive "foo" in /etc/nginx/nginx.conf:12', Cause.CONFIG_ERROR),
        (b'2026/11/24 09:26:23 [emerg] 1#1: host not found in upstream "x.invalid" in /e:3',
         Cause.DNS_FAILURE),
        (b"2026/11/24 09:26:23 [emerg] 1#1: bind() to 0.0.0.0:80 failed (98: Address in use)",
         Cause.CONFIG_ERROR),
        (b"nginx: configuration file /etc/nginx/nginx.conf test failed", None),
    ],
)  # fmt: skip
def test_nginx_emerg_is_a_config_error_unless_something_more_precise(
    line: bytes, cause: Cause
) -> None:
    assert NGINX.classify(line) is cause


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        (b"server reached pm.max_children setting (5), consider raising it",
         Cause.FPM_MAX_CHILDREN),
        (b"child 123 exited on signal 11 (SIGSEGV - core dumped) after 3.1 seconds from start",
         Cause.WORKER_CRASHED),
        (b"child 123 exited on signal 9 (SIGKILL) after 0.31 seconds from start",
         Cause.WORKER_CRASHED),
        (b"child 123, script '/var/www/a.php' (request: \"GET /a.php\") execution timed out "
         b"(2.03 sec), terminating", Cause.FPM_EXEC_TIMEOUT),
        (b"child 123, script '/var/www/a.php' (request: \"GET /a.php\") executing too slow "
         b"(1.01 sec), logging", Cause.FPM_SLOW),
        (b"child 123 exited with code 0 after 10.2 seconds from start", None),
    ],
)  # fmt: skip
def test_fpm_messages_name_their_cause(message: bytes, cause: Cause | None) -> None:
    assert FPM.classify(FP + message) is cause


@pytest.mark.parametrize("signal", [b"3 (SIGQUIT)", b"15 (SIGTERM)"])
def test_fpm_killing_its_own_children_is_no_crash(signal: bytes) -> None:
    assert FPM.classify(FP + b"child 1 exited on signal " + signal + b" after 2.7 seconds") is None


@pytest.mark.parametrize(
    "line",
    [
        b"[24-Nov-2026 09:26:55] ERROR: [/etc/php/8.2/fpm/pool.d/www.conf:12] unable to parse "
        b"value for entry 'pm': invalid process manager (static, dynamic or ondemand)",
        b"[24-Nov-2026 09:26:55] ERROR: failed to load configuration file '/etc/php/fpm.conf'",
        b"[24-Nov-2026 09:26:55] ERROR: failed to post process the configuration",
    ],
)
def test_fpm_config_failures_are_config_errors(line: bytes) -> None:
    assert FPM.classify(line) is Cause.CONFIG_ERROR


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        (b"[proxy_fcgi:error] [pid 1:tid 2] [client 127.0.0.1:4] AH01067: Failed to read "
         b"FastCGI header", Cause.UPSTREAM_RESET),
        (b"[proxy_fcgi:error] [pid 1:tid 2] (104)Connection reset by peer: [client 1.2.3.4:5] "
         b"AH01075: Error dispatching request to : ", Cause.UPSTREAM_RESET),
        (b"[proxy_fcgi:error] [pid 1:tid 2] [client 1.2.3.4:5] AH01079: failed to make "
         b"connection to backend: localhost", Cause.UPSTREAM_REFUSED),
        (b"[proxy:error] [pid 1:tid 2] (111)Connection refused: AH02454: FCGI: attempt to "
         b"connect to Unix domain socket /run/php.sock (localhost:8000) failed",
         Cause.UPSTREAM_REFUSED),
        (b"AH00526: Syntax error on line 32 of /etc/apache2/apache2.conf:", Cause.CONFIG_ERROR),
        (b"[authz_core:error] [pid 1:tid 2] [client 1.2.3.4:5] AH01630: client denied by server "
         b"configuration: /var/www/AH01079", None),
    ],
)  # fmt: skip
def test_apache_codes_name_their_cause(line: bytes, cause: Cause | None) -> None:
    assert APACHE.classify(line) is cause


def test_apache_socket_gone_is_missing_not_refused() -> None:
    line = AP + b"(2)No such file or directory: AH02454: FCGI: attempt to connect failed"
    assert APACHE.classify(line) is Cause.UPSTREAM_MISSING


def test_apache_dispatch_timeout_is_a_timeout_not_a_reset() -> None:
    line = AP + b"(70007)The timeout specified has expired: [client 1.2.3.4:5] AH01075: Error"
    assert APACHE.classify(line) is Cause.UPSTREAM_TIMEOUT


# ---- the journal: same classifiers, no header ------------------------------------------------
@pytest.mark.parametrize(("message", "cause"), NGINX_CASES)
def test_nginx_messages_classify_the_same_without_a_header(
    message: bytes, cause: Cause | None
) -> None:
    assert NGINX.classify(message + CTX) is cause


def test_fpm_syslog_form_classifies() -> None:
    assert FPM.classify(b"[WARNING] [pool www] child 7 exited on signal 9 (SIGKILL)") is (
        Cause.WORKER_CRASHED
    )


# ---- text a client chose ---------------------------------------------------------------------
CLIENT_TEXT = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b""))
SPELLS = [b"no live upstreams while", b"upstream timed out (110: ", b"x could not be resolved ("]


@settings(max_examples=300, deadline=None)
@given(text=CLIENT_TEXT, spell=st.sampled_from(SPELLS), where=st.integers(0, 2))
def test_a_path_or_request_spelling_an_error_is_no_error(
    text: bytes, spell: bytes, where: int
) -> None:
    chosen = [text + spell, spell + text, text[:10] + spell + text[10:]][where]
    line = NX + b'open() "/var/www/' + chosen + b'" failed (2: No such file or directory)'
    line += b', client: 1.2.3.4, server: , request: "GET /' + chosen + b' HTTP/1.1"'
    assert NGINX.classify(line) is None


@settings(max_examples=200, deadline=None)
@given(text=CLIENT_TEXT)
def test_a_scripts_stderr_is_never_classified(text: bytes) -> None:
    for spell in (b"child 1 exited on signal 11 (SIGSEGV)", b"server reached pm.max_children"):
        assert FPM.classify(FP + b'child 42 said into stderr: "' + spell + text + b'"') is None


def test_a_slow_request_spelling_execution_timed_out_is_only_slow() -> None:
    line = FP + (
        b"child 9, script '/w/a.php' (request: \"GET /a.php?x=\") execution timed out (2.0 sec),"
        b' terminating") executing too slow (1.1 sec), logging'
    )
    assert FPM.classify(line) is Cause.FPM_SLOW


# ---- time ------------------------------------------------------------------------------------
NOON_UTC = dt.datetime(2026, 11, 24, 9, 26, 23, tzinfo=UTC).timestamp()


def test_nginx_time_is_read_in_the_given_zone() -> None:
    line = NX + b"no live upstreams while connecting to upstream"
    assert NGINX.time(line, UTC) == NOON_UTC
    assert NGINX.time(line, ZoneInfo("Europe/Berlin")) == NOON_UTC - 3600  # CET, UTC+1


def test_local_time_follows_summer_time() -> None:
    line = b"2026/07/01 12:00:00 [error] 1#1: *1 no live upstreams while connecting to upstream"
    want = dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC).timestamp()  # CEST, UTC+2
    assert NGINX.time(line, ZoneInfo("Europe/Berlin")) == want


@pytest.fixture
def host_zone_berlin() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("host_zone_berlin")
def test_without_a_zone_the_hosts_own_is_used() -> None:
    line = NX + b"no live upstreams while connecting to upstream"
    assert NGINX.time(line) == NOON_UTC - 3600


def test_fpm_time() -> None:
    assert FPM.time(FP + b"child 1 exited on signal 9", UTC) == NOON_UTC + 32


def test_apache_time_keeps_its_microseconds() -> None:
    want = dt.datetime(2026, 11, 24, 9, 40, 8, 720813, tzinfo=UTC).timestamp()
    assert APACHE.time(AP + b"AH01079: x", UTC) == pytest.approx(want, abs=1e-6)


def test_a_line_without_a_time_has_none() -> None:
    assert NGINX.time(b"nginx: [emerg] unknown directive", UTC) is None


@pytest.mark.parametrize("tz", [UTC, None])
def test_a_time_that_is_no_time_is_none(tz: dt.tzinfo | None) -> None:
    assert FPM.time(b"[31-Feb-2026 09:26:55] WARNING: x", tz) is None


# ---- evidence --------------------------------------------------------------------------------
def test_nginx_fields_name_client_request_and_upstream() -> None:
    f = NGINX.fields(NX + NGINX_CASES[0][0] + CTX + UP)
    assert f["level"] == "error"
    assert f["client"] == "127.0.0.1"
    assert f["request"] == "GET /index.php HTTP/1.1"
    assert f["upstream"] == "fastcgi://unix:/run/php/php8.2-fpm.sock:"
    assert f["message"].startswith("connect() to unix:")


def test_fpm_fields_name_pool_child_and_signal() -> None:
    f = FPM.fields(FP + b"child 123 exited on signal 11 (SIGSEGV) after 0.1 seconds")
    assert (f["pool"], f["child"], f["signal"], f["signal_name"]) == ("www", "123", "11", "SIGSEGV")


def test_apache_fields_name_code_errno_and_client() -> None:
    f = APACHE.fields(AP + b"(104)Connection reset by peer: [client 1.2.3.4:5] AH01075: Error")
    assert (f["code"], f["errno"], f["client"]) == ("AH01075", "104", "1.2.3.4:5")


def test_fields_never_raise_on_invalid_utf8() -> None:
    f = NGINX.fields(NX + b'open() "/\xff\xfe" failed' + CTX)
    assert "\\xff\\xfe" in f["message"]
