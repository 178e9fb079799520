"""make upgrade's controller-side lock: one upgrade (or make rollback's recovery of one) per inventory at a time.

Two make upgrade runs of one inventory at once would interleave their journal and lock.yml edits (each host's
provision takes its own run lock, but the journal and the lock live beside the inventory, on the controller).
The second one is refused in one sentence naming the first; it does not wait, since the first may then change
the very lock the second planned from.

The lock is a flock on <inventory dir>/.sdenv-upgrade.lock held by the upgrade's own process: the kernel drops
it when that process ends, however it ends (kill -9 included), so it never outlives its run; the file's
content only names the holder, and the file exists only while a run holds it. The record is read and written
with the run lock's helpers (sdenv_run_lock), which do the same on each host.
"""

import contextlib
import datetime
import os

from sdenv_run_lock import is_current, read_record, try_flock, write_record

LOCK_NAME = ".sdenv-upgrade.lock"


class UpgradeLocked(Exception):
    """Another run holds the lock: the message is the sentence for the user."""


def refusal(record, path):
    what = record.get("what") or "make upgrade"
    return (
        f"Another {what} (pid {record.get('pid', '?')}, started at {record.get('started', '?')}) is changing "
        f"this inventory's lock and upgrade journal ({path}): let it finish, then run this again."
    )


@contextlib.contextmanager
def held(directory, what):
    """Hold the lock of the inventory in `directory` for the body, naming the run `what` (e.g. "make upgrade
    WEBUI=v1.10.2"); raises UpgradeLocked when another run holds it."""
    path = os.path.join(directory, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        if not try_flock(fd):
            record = read_record(fd)
            os.close(fd)
            raise UpgradeLocked(refusal(record, path))
        if is_current(fd, path):
            break
        os.close(fd)  # the file its holder removed as it ended: that inode locks nothing; open the new one
    try:
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        write_record(fd, {"what": what, "pid": os.getpid(), "started": started})
        yield
    finally:
        # Removed while still held: a run that opened the old inode meanwhile sees it is not current.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
