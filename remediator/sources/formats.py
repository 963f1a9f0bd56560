"""Names of the log formats the language accepts, with the one-line descriptions docs show.

The parsers themselves live in ``accesslog`` and ``errorlog``; this module is the seam the
config validator uses, so validating a config never depends on parser internals.
"""

from __future__ import annotations

ACCESS_FORMATS: dict[str, str] = {
    "nginx-combined": "nginx's predefined `combined` format",
    "nginx-timed": "`combined` plus ` rt=$request_time us=$upstream_status "
    "urt=$upstream_response_time`",
    "apache-common": 'Apache\'s common log format (`%h %l %u %t "%r" %>s %b`)',
    "apache-combined": "Apache's combined format (common plus referer and user agent)",
    "apache-combined-time": "Apache's combined format plus ` %D` (microseconds)",
}

ERROR_FORMATS: dict[str, str] = {
    "nginx-error": "nginx's error log",
    "apache-error": "Apache's error log (proxy_fcgi's AH numbers)",
    "php-fpm": "PHP-FPM's master log (also its journal messages)",
}


def check_custom_format(flavour: str, text: str) -> str | None:
    """Why an operator's nginx ``log_format`` / Apache ``LogFormat`` cannot be used, or None."""
    needed = ("$status",) if flavour == "nginx" else ("%>s", "%s")
    if not any(n in text for n in needed):
        return f"the format has no status field ({' or '.join(needed)}): nothing to detect"
    return None
