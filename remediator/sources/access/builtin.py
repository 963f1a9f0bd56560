"""The built-in formats: what a config's ``format:`` names."""

from __future__ import annotations

from typing import Final

from remediator.sources.access.apache import compile_apache_format
from remediator.sources.access.compiled import AccessFormat
from remediator.sources.access.nginx import compile_nginx_format

_COMBINED: Final = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
# The JSON log_format most often shared (a json_combined of combined's fields), escape=json.
_JSON: Final = (
    "log_format json_combined escape=json '{'"
    """ '"time_local":"$time_local",'"""
    """ '"remote_addr":"$remote_addr",'"""
    """ '"remote_user":"$remote_user",'"""
    """ '"request":"$request",'"""
    """ '"status": "$status",'"""
    """ '"body_bytes_sent":"$body_bytes_sent",'"""
    """ '"request_time":"$request_time",'"""
    """ '"http_referrer":"$http_referer",'"""
    """ '"http_user_agent":"$http_user_agent"'"""
    " '}';"
)
_A_COMMON: Final = '%h %l %u %t "%r" %>s %b'
_A_COMBINED: Final = _A_COMMON + ' "%{Referer}i" "%{User-Agent}i"'

ACCESS_FORMATS: Final[dict[str, AccessFormat]] = {
    f.name: f
    for f in (
        compile_nginx_format(
            _COMBINED, name="nginx-combined", description="nginx's predefined `combined` format"
        ),
        compile_nginx_format(
            _COMBINED + " rt=$request_time us=$upstream_status urt=$upstream_response_time",
            name="nginx-timed",
            description="`combined` plus ` rt=$request_time us=$upstream_status "
            "urt=$upstream_response_time`",
        ),
        compile_nginx_format(
            _JSON,
            name="nginx-json",
            description="nginx JSON lines (`escape=json`): time_local, remote_addr, "
            "remote_user, request, status, body_bytes_sent, request_time, http_referrer, "
            "http_user_agent",
        ),
        compile_apache_format(
            _A_COMMON, name="apache-common", description="Apache's common log format"
        ),
        compile_apache_format(
            _A_COMBINED, name="apache-combined", description="Apache's combined log format"
        ),
        compile_apache_format(
            _A_COMBINED + " %D",
            name="apache-combined-time",
            description="Apache's combined format plus ` %D` (request time in microseconds)",
        ),
        compile_apache_format(
            '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
            name="apache-vhost-combined",
            description="Apache's `vhost_combined` (Debian's other_vhosts_access.log): "
            "`%v:%p ` before combined",
        ),
    )
}
"""The built-in formats by name; a config's ``format:`` names one of these."""
