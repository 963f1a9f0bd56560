"""Access-log formats, one idea a module; :mod:`remediator.sources.accesslog` is the front door.

* :mod:`.model`: what a format is made of (literals and typed fields), and its errors;
* :mod:`.nginx`, :mod:`.apache`: each server's format language, pasted directives included;
* :mod:`.regex`: a format's fields as byte regexes (exact, and fast for the hot path);
* :mod:`.scanner`: whole buffers at C speed (the hot path), into :class:`.scanner.Batch`;
* :mod:`.timeparse`: the times servers write, to epoch seconds;
* :mod:`.compiled`: :class:`.compiled.AccessFormat`, a format ready to read lines;
* :mod:`.builtin`: the formats a config names; :mod:`.guess`: which of them a file is in.
"""
