"""Sources: turn log bytes, journal entries, probes and host stats into small events."""
