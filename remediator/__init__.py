"""remediator: an auto-remediation daemon for web hosts."""

__version__ = "0.1.0"
