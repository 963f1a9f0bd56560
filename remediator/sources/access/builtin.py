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
    )
}
"""The built-in formats by name; a config's ``format:`` names one of these."""
