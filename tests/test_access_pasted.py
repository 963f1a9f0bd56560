"""Access-log formats as operators have them: pasted from nginx.conf or apache2.conf.

The snippets are real configs, cited where they are used; the servers that write the logs
are real too (tests/stack.py), and the replays count every status exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.sources.accesslog import ACCESS_FORMATS, FormatError, compile_nginx_format
from remediator.sources.accesslog import compile_apache_format as apache
from tests.stack import Stack, http_get, wait_for

# nginx's official Docker image, /etc/nginx/nginx.conf (github.com/nginxinc/docker-nginx,
# stable/debian/nginx.conf), also commented out in nginx's own conf/nginx.conf.
DOCKER_MAIN = """\
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';
"""
# A JSON format with escape=json and a nested object, as shared in posts on nginx JSON logs
# (http://t.zoukankan.com/felixzh-p-8710399.html, https://iter01.com/186094.html).
JSON_NESTED = """\
log_format json_combined escape=json '{"@timestamp":"$time_iso8601",'
    '"@source":"$server_addr",'
    '"@nginx_fields":{'
    '"remote_addr":"$remote_addr",'
    '"remote_user":"$remote_user",'
    '"body_bytes_sent":"$body_bytes_sent",'
    '"request_time":"$request_time",'
    '"status":"$status",'
    '"host":"$host",'
    '"uri":"$uri",'
    '"request_method":"$request_method",'
    '"http_referrer":"$http_referer",'
    '"http_x_forwarded_for":"$http_x_forwarded_for",'
    '"http_user_agent":"$http_user_agent",'
    '"upstream_response_time":"$upstream_response_time",'
    '"upstream_addr":"$upstream_addr"}}';
"""
# Debian 12's /etc/apache2/apache2.conf (apache2 2.4.71-1~deb12u1), line 212: the format of
# /var/log/apache2/other_vhosts_access.log.
VHOST_COMBINED = (
    'LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\"" '
    "vhost_combined"
)

LINE = (
    b'203.0.113.9 - - [05/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 502 157 "-" "curl/8.5"'
    b' "198.51.100.7"'
)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


# ---- pasted directives, no server ----------------------------------------------------------
def test_the_docker_main_directive_reads_as_pasted() -> None:
    f = compile_nginx_format(DOCKER_MAIN)
    assert f.status(LINE) == 502
    assert (f.fields(LINE) or {})["http_x_forwarded_for"] == "198.51.100.7"


@pytest.mark.parametrize(
    "text",
    [
        "main '$remote_addr - $remote_user [$time_local] \"$request\" ' "
        '\'$status $body_bytes_sent "$http_referer" \' \'"$http_user_agent" '
        '"$http_x_forwarded_for"\'',
        '\'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"\';',
        "log_format main escape=default\n  '$remote_addr - $remote_user [$time_local] '"
        '  # a comment\n  \'"$request" $status $body_bytes_sent "$http_referer" \''
        '\n  \'"$http_user_agent" "$http_x_forwarded_for"\' ;',
    ],
    ids=["no-keyword", "no-name", "keyword-escape-comment"],
)
def test_the_keyword_the_name_and_the_semicolon_are_optional(text: str) -> None:
    assert compile_nginx_format(text).status(LINE) == 502


def test_a_bare_format_that_starts_with_a_quote_stays_a_bare_format() -> None:
    f = compile_nginx_format('"$request" $status')
    assert f.status(b'"GET / HTTP/1.1" 404') == 404


def test_escape_json_of_the_directive_is_used() -> None:
    f = compile_nginx_format('log_format j escape=json \'{"s":"$status","u":"$uri"}\';')
    assert f.status(b'{"s":"200","u":"/a\\"b"}') == 200


def test_unknown_variables_are_opaque_fields() -> None:
    f = compile_nginx_format(
        "'$remote_addr $ssl_protocol/$ssl_cipher [$time_local] $geoip_country_code "
        '"$request" $status $my_own_variable\''
    )
    line = (
        b'10.0.0.1 TLSv1.3/TLS_AES_256_GCM_SHA384 [05/Dec/2026:10:00:00 +0000] DE "GET / x" 200 a b'
    )
    assert f.status(line) == 200
    assert (f.fields(line) or {})["my_own_variable"] == "a b"


def test_an_error_in_a_pasted_directive_is_located_in_the_pasted_text() -> None:
    text = "log_format main '$remote_addr ' '$status $'"
    with pytest.raises(FormatError) as e:
        compile_nginx_format(text)
    assert e.value.column == text.index("$'") + 1


def test_a_pasted_directive_without_a_format_is_refused() -> None:
    with pytest.raises(FormatError, match="no format string"):
        compile_nginx_format("log_format main;")


def test_an_unclosed_quote_in_a_directive_is_refused() -> None:
    with pytest.raises(FormatError, match="no closing"):
        compile_nginx_format("log_format main '$status;")


def test_the_nested_json_directive_reads_its_lines() -> None:
    f = compile_nginx_format(JSON_NESTED)
    line = (
        b'{"@timestamp":"2026-12-05T10:00:00+00:00","@source":"127.0.0.1","@nginx_fields":'
        b'{"remote_addr":"127.0.0.1","remote_user":"","body_bytes_sent":"157","request_time":'
        b'"0.000","status":"502","host":"localhost","uri":"/index.php","request_method":"GET",'
        b'"http_referrer":"","http_x_forwarded_for":"","http_user_agent":"say \\"hi\\"",'
        b'"upstream_response_time":"0.000","upstream_addr":"unix:/run/php/php-fpm.sock"}}'
    )
    assert f.status(line) == 502
    assert f.time(line) == 1796464800.0


def test_the_debian_vhost_combined_directive_reads_as_the_built_in() -> None:
    pasted = apache(VHOST_COMBINED)
    line = (
        b'www.example.com:443 203.0.113.5 - - [05/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" '
        b'503 299 "-" "Mozilla/5.0 \\"quoted\\""'
    )
    assert pasted.status(line) == 503
    assert ACCESS_FORMATS["apache-vhost-combined"].status(line) == 503


def test_apache_directive_with_more_than_a_nickname_is_refused() -> None:
    with pytest.raises(FormatError, match="nickname"):
        apache('LogFormat "%h %>s" common extra')


# ---- malformed: the wrong format, a cut line -----------------------------------------------
def test_a_line_with_a_field_more_than_the_format_is_malformed() -> None:
    combined = ACCESS_FORMATS["nginx-combined"]
    assert combined.status(LINE) is None
    assert combined.scan(LINE + b"\n" + LINE).malformed == 2


def test_a_line_cut_in_its_last_quoted_field_is_malformed() -> None:
    combined = ACCESS_FORMATS["nginx-combined"]
    whole = LINE[: LINE.rindex(b' "')]
    cut = whole[:-4]
    batch = combined.scan(whole + b"\n" + cut + b"\n" + whole)
    assert (batch.statuses, batch.malformed, batch.bad) == ([502, 502], 1, [1])


def test_the_built_in_json_format_reads_nginx_json_lines() -> None:
    line = (
        b'{"time_local":"05/Dec/2026:10:00:00 +0000","remote_addr":"127.0.0.1",'
        b'"remote_user":"","request":"GET /?q=\\"x\\" HTTP/1.1","status": "504",'
        b'"body_bytes_sent":"0","request_time":"60.001","http_referrer":"",'
        b'"http_user_agent":"curl/8.5"}'
    )
    f = ACCESS_FORMATS["nginx-json"]
    assert f.status(line) == 504
    assert f.duration(line) == 60.001


# ---- real servers writing the pasted formats -----------------------------------------------
REQUESTS = [
    ("/index.php", 200),
    ("/index.php?q=%22quoted%22", 200),
    ("/code.php?c=503", 503),
    ("/code.php?c=503", 503),
    ("/code.php?c=502", 502),
    ("/nothing-here.html", 404),
]
WANT = {"200": 2, "404": 1, "502": 1, "503": 2}


def _send(url: str) -> None:
    for path, status in REQUESTS:
        got, _ = http_get(url + path, headers={"User-Agent": 'odd "agent" \\ here'})
        assert got == status


def _wait_lines(log: Path) -> None:
    wait_for(lambda: log.read_bytes().count(b"\n") == len(REQUESTS), 5, f"lines in {log}")


def _replay(tmp_path: Path, source: str, log: Path, *extra: str) -> dict[str, object]:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(f"sources:\n  web:\n    type: access_log\n    path: {log}\n{source}")
    (tmp_path / "playbooks.d").mkdir(exist_ok=True)
    rc, out, err = run("-c", str(cfg), "replay", "--json", *extra, str(log))
    assert rc == 0, err
    summary: dict[str, object] = json.loads(out.splitlines()[-1])
    return summary


def _block(key: str, text: str) -> str:
    return f"    {key}: |\n" + "".join(f"      {line}\n" for line in text.strip().splitlines())


@pytest.mark.servers
def test_real_nginx_logs_in_pasted_formats_replay_exactly(stack: Stack, tmp_path: Path) -> None:
    main_log, json_log = tmp_path / "main.log", tmp_path / "json.log"
    nginx = stack.nginx(
        stack.fpm(),
        extra_http=f"{DOCKER_MAIN}{JSON_NESTED}"
        f"    access_log {main_log} main;\n    access_log {json_log} json_combined;\n",
    )
    _send(nginx.url(""))
    _wait_lines(main_log)
    _wait_lines(json_log)
    for log, text in ((main_log, DOCKER_MAIN), (json_log, JSON_NESTED)):
        summary = _replay(tmp_path, _block("log_format", text), log)
        assert (summary["statuses"], summary["malformed"]) == (WANT, 0), log.name
    # Docker's main read as combined: every line has a field more, so says malformed
    summary = _replay(tmp_path, "    format: nginx-combined\n", main_log)
    assert (summary["statuses"], summary["malformed"]) == ({}, len(REQUESTS))


@pytest.mark.servers
def test_real_apache_vhost_combined_replays_pasted_and_built_in(
    stack: Stack, tmp_path: Path
) -> None:
    log = tmp_path / "other_vhosts_access.log"
    apache_ = stack.apache(stack.fpm(), extra=f"{VHOST_COMBINED}\nCustomLog {log} vhost_combined\n")
    _send(apache_.url(""))
    _wait_lines(log)
    pasted = _replay(tmp_path, _block("apache_format", VHOST_COMBINED), log)
    built_in = _replay(tmp_path, "    format: apache-vhost-combined\n", log)
    for summary in (pasted, built_in):
        assert (summary["statuses"], summary["malformed"]) == (WANT, 0)


@pytest.mark.servers
def test_format_auto_names_the_built_in_it_read(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "other_vhosts_access.log"
    apache_ = stack.apache(stack.fpm(), extra=f"{VHOST_COMBINED}\nCustomLog {log} vhost_combined\n")
    _send(apache_.url(""))
    _wait_lines(log)
    rc, out, err = run(
        "-c", str(tmp_path / "none.yaml"), "replay", "--json", "--format", "auto", str(log)
    )
    assert rc == 0, err
    assert f"{log}: --format auto: read as apache-vhost-combined: 6 of 6 lines read" in err
    summary = json.loads(out.splitlines()[-1])
    assert summary["statuses"] == WANT
    assert summary["formats_guessed"] == {str(log): "apache-vhost-combined: 6 of 6 lines read"}


def test_format_auto_refuses_a_file_no_built_in_reads(tmp_path: Path) -> None:
    log = tmp_path / "odd.log"
    log.write_text("hello\nworld\n")
    rc, _, err = run("-c", str(tmp_path / "none.yaml"), "replay", "--format", "auto", str(log))
    assert rc == 2
    assert "no built-in format reads any of its first 2 lines" in err
