"""The commands of ``remediator``, one module per group, each with its parsers' ``add_*``
functions; :mod:`remediator.cli` builds the parser from them and runs one."""
