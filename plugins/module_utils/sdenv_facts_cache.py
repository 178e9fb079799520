"""The controller's copy of each host's preflight facts, `~/.ansible/sdenv-preflight-facts/<host>.json`
(plugins/action/sdenv_preflight.py): only a speed-up, which lets the preflight ask a host once per run.

Pruned by age, not by inventory: one controller runs several inventories (this machine's, a fleet's, the test
suites' throwaway ones), and a host missing from this run's inventory may well be in the next run's. Every
run rewrites its hosts' copies, so a copy no run has written for KEEP_DAYS belongs to a host nobody provisions
any more; losing one costs that host one more module run, nothing else. Temporary files a killed write left
are removed after a day (a write in progress is a fraction of a second old).
"""

import contextlib
import os
import time

KEEP_DAYS = 30
TEMPORARY_HOURS = 24


def prune(directory, now=None, keep_days=KEEP_DAYS):
    """Remove the copies in directory no run wrote for keep_days days, and the stale temporary files; only
    regular files of the cache's own names (never a link, a directory or another file). Returns the names
    removed, sorted."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no cache yet, or unreadable: nothing to prune
        return removed
    for entry in entries:
        if entry.name.endswith(".tmp"):
            oldest = now - TEMPORARY_HOURS * 3600
        elif entry.name.endswith(".json"):
            oldest = now - keep_days * 86400
        else:
            continue
        with contextlib.suppress(OSError):  # another run's prune or write got there first
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < oldest:
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)
