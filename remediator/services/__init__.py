"""Services as remediator sees them: their state (observed by the watcher) and their control
(used by the actions), through systemd or a pid file. One place, used by both."""
