"""A pool of hosts of which at most K remediate at once, coordinated through etcd.

Nothing here is imported unless the configuration has a ``fleet:`` section: without one the
daemon has no etcd code path at all. :mod:`.options` declares the section (imported by the
configuration, it imports nothing of etcd); :mod:`.etcd` speaks etcd's v3 JSON gateway,
:mod:`.semaphore` is the K-slot semaphore on leases and revisions, :mod:`.gate` runs it on a
worker thread so the daemon's loop never waits for etcd.
"""
