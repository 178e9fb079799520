"""One changing run per host at a time: the run lock in the state directory.

Every target that changes a host (provision, reset-dummy, remove-dummy, snapshot, rollback, snapshot-prune,
pin-models) takes `<state dir>/run.lock` after its preflight and holds it until the run ends; a second run
waits, naming the first ("another make provision, pid N, started at T, is changing this host: waiting"), and
refuses in one sentence when the wait times out.

Why flock on a file: the kernel drops the lock when the last descriptor of the holder goes, however it goes
(kill -9 included), so a lock can never outlive its run the way a pid file does; the file's content only
names the holder for the messages.

Why a helper process: an Ansible play is many module processes, each gone when its task ends, so no task
can hold a descriptor for the play. The task that takes the lock forks a small helper that keeps the locked
descriptor and watches the run it belongs to, then ends when that run ends:
- On the controller's own host (local connection) the run's ansible-playbook process is an ancestor of the
  module; the helper watches that pid (and its start time, so a reused pid is not mistaken for the run) and
  exits as soon as it is gone, kill -9 of the run included.
- On a remote host the ansible-playbook process is on another machine. The helper watches the sshd process
  that carries the run's connection (the nearest sshd ancestor): Ansible's ssh connection keeps one
  multiplexed connection for the whole run (ControlPersist), and it ends when the run ends (after the
  ControlPersist idle time when the run was killed). So a remote host's lock may outlive a killed run by that
  idle time, never for good.
A run that ends normally lets the lock go at its end, so a waiting run goes on at once: on the controller's
own host the sdenv_run_lock callback ends the helper when the playbook ends (no task, no round trip); over SSH
the run's last play releases it (release()).
The record names the run by its controller, pid and start time (the "token"): a later task of the same run
finds its own token and holds the lock already (a playbook of several plays takes it once).

Where it is taken: inside the preflight's one module run per host (preflight_facts, try_take: no wait), so a
changing target costs no task of its own for its lock; only when another run holds it does the preflight,
after its checks passed, wait for it in a second module run (sdenv_run_lock), saying so first.
"""

import contextlib
import errno
import fcntl
import inspect
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

LOCK_NAME = "run.lock"
POLL_SECONDS = 0.5


class RunLockError(Exception):
    """The lock could not be taken: the message is the sentence for the user."""


# -- processes ------------------------------------------------------------------------------------------


def parse_proc_stat(text):
    """(state, ppid, start ticks) from /proc/<pid>/stat: the command name (field 2) may hold spaces and
    parentheses, so the fields are counted after its last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def parse_ps_line(line):
    """(ppid, start, command) from `ps -o ppid=,lstart=,command= -p PID` (macOS and BSD, no /proc): lstart is
    five words, e.g. "Mon Dec  7 03:39:05 2026"."""
    words = line.split()
    if len(words) < 6:
        return None
    return int(words[0]), " ".join(words[1:6]), " ".join(words[6:])


def process_info(pid):
    """(ppid, start token, command line) of a live pid, or None when there is no such process. The start
    token tells a process from a later one given the same pid."""
    if pid <= 0:
        return None
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                state, ppid, start = parse_proc_stat(handle.read())
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError, IndexError):
            return None
        if state in ("Z", "X"):  # exited, only not reaped yet: its descriptors (and flocks) are gone
            return None
        return ppid, start, command
    completed = subprocess.run(
        ["ps", "-o", "ppid=,lstart=,command=", "-p", str(pid)],
        capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    lines = completed.stdout.strip().splitlines()
    return parse_ps_line(lines[0]) if completed.returncode == 0 and lines else None


def start_token(pid):
    info = process_info(pid)
    return None if info is None else info[1]


def is_alive(pid, start):
    """True when pid is running and is the very process that started at `start` (not a reused pid)."""
    return bool(pid) and start is not None and start_token(int(pid)) == start


def ancestors(pid, info=process_info):
    """[(pid, command), ...] from pid's parent up to init."""
    chain = []
    seen = set()
    current = info(pid)
    while current and current[0] > 1 and current[0] not in seen:
        seen.add(current[0])
        parent = info(current[0])
        if parent is None:
            break
        chain.append((current[0], parent[2]))
        current = parent
    return chain


def choose_owner(chain, controller_pid, local):
    """The pid the helper watches: the run's ansible-playbook process when it is an ancestor (local
    connection), else the nearest sshd ancestor (the run's ssh connection). None: nothing to watch."""
    pids = [pid for pid, _ in chain]
    if local and controller_pid in pids:
        return controller_pid
    for pid, command in chain:
        name = os.path.basename(command.split()[0]) if command.split() else ""
        if name.startswith("sshd") or command.startswith("sshd:"):
            return pid
    return None


# -- the record -----------------------------------------------------------------------------------------


def lock_path(state_dir):
    return os.path.join(state_dir, LOCK_NAME)


def read_record(fd):
    """The holder the lock file names ({} for none, or for a record half-written at this instant)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(fd, record):
    """In place, never by rename: the lock belongs to this inode."""
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def describe(record):
    """'make provision, pid N on HOST, started at T' for the messages."""
    if not record:
        return "a run that left no record"
    where = f" on {record['controller']}" if record.get("controller") else ""
    return (
        f"make {record.get('target', '?')}, pid {record.get('controller_pid', '?')}{where}, "
        f"started at {record.get('started', '?')}"
    )


def waiting_message(record, timeout, subject="this host"):
    """subject: what the lock guards ("this host", or the controller's fleet cache and its path)."""
    return f"another {describe(record)}, is changing {subject}: waiting (up to {timeout} s)"


def timeout_message(record, timeout, path, subject="this host"):
    return (
        f"Another {describe(record)}, is still changing {subject} after {timeout} s (lock {path}): let it "
        "finish or stop it, then run again (sdenv_run_lock_timeout sets how long a run waits)."
    )


def private_dir(directory):
    """prepare() for a lock in a directory of the controller user's own (the fleet cache, 0700): made when
    missing, never chowned or opened up the way the root-owned state directory is. True when it made it."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return False
    return True


def takeover_message(record):
    return (
        f"The run lock was last held by {describe(record)}, which is no longer running and did not release it "
        "(it failed or was killed): taking the lock over."
    )


def holder_alive(record):
    return is_alive(record.get("helper_pid"), record.get("helper_start"))


# -- the run, as the controller names it ----------------------------------------------------------------


def process_start(pid):
    """The start time of a controller process (Linux /proc; elsewhere the pid alone names the run)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def controller_run(pid):
    """{controller, controller_pid, token} naming the run whose ansible-playbook process is pid."""
    controller = socket.gethostname()
    return {
        "controller": controller,
        "controller_pid": pid,
        "token": f"{controller}:{pid}:{process_start(pid)}",
    }


def run_has_ended(holder, controller):
    """The holder is a run of this controller whose ansible-playbook is gone (or its pid now someone else's).
    Its helper on the host can outlive it over SSH (tied to a connection Ansible keeps and this run shares)."""
    parts = str(holder.get("token", "")).rsplit(":", 2)
    if holder.get("controller") != controller or len(parts) != 3 or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    if start:
        return process_start(pid) != start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def before_waiting(holder, controller, timeout, subject="this host"):
    """(take_over, message) for a run that found the lock busy: the holder's token when it is a run of this
    controller that has ended (its helper is stopped and the lock taken, no wait), else the sentence to print
    before the wait (subject: what the lock guards, as waiting_message says it)."""
    if run_has_ended(holder, controller):
        return holder["token"], None
    return "", waiting_message(holder, timeout, subject)


OWNER_NOT_FOUND = (
    "Cannot find the process of this run to tie the run lock to (neither the controller's ansible-playbook nor "
    "an sshd connection is an ancestor of this task): run the target through make over a local or ssh "
    "connection."
)


def run_record(run, pid=None):
    """The record naming this run on the host: run is {target, token, controller, controller_pid, local};
    the owner the helper watches is found from pid's ancestors (this process's by default)."""
    owner = choose_owner(ancestors(os.getpid() if pid is None else pid), run["controller_pid"], run["local"])
    owner_start = start_token(owner) if owner else None
    if owner is None or owner_start is None:
        raise RunLockError(OWNER_NOT_FOUND)
    return {
        "target": run.get("target", ""),
        "token": run["token"],
        "controller": run.get("controller", ""),
        "controller_pid": run["controller_pid"],
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "owner_pid": owner,
        "owner_start": owner_start,
    }


def take_for_run(
    run, timeout, prepare=None, take_over="", wait=True, spawn=None, pid=None, subject="this host"
):
    """Take the lock for a module's run (run: {state_dir, target, token, controller, controller_pid, local}).
    Returns {lock, notes, holder, helper_pid, helper_start, local}: lock 'acquired' or 'ours', or, with wait
    False, 'busy' (holder: the record of the run that has it) instead of a wait and a refusal; the helper's
    pid and start when acquired (the sdenv_run_lock callback ends it when the playbook ends). Raises
    RunLockError (no owner process; with wait, the timeout's sentence)."""
    record = run_record(run, pid)
    try:
        state, notes = acquire(
            run["state_dir"], run["token"], record, 0 if not wait else timeout, prepare=prepare,
            take_over=take_over, spawn=spawn, subject=subject,
        )  # fmt: skip
    except RunLockError:
        if wait:
            raise
        return {
            "lock": "busy",
            "notes": [],
            "holder": current_holder(run["state_dir"]),
            "local": run["local"],
        }
    found = {"lock": state, "notes": notes, "holder": {}, "local": run["local"]}
    if state == "acquired":
        held = current_holder(run["state_dir"])
        found.update(helper_pid=held.get("helper_pid"), helper_start=held.get("helper_start"))
    return found


# -- taking, holding and releasing ----------------------------------------------------------------------


def open_lock(state_dir, create=True):
    """(fd, path) of the lock file, or (None, path) when it does not exist and create is False."""
    path = lock_path(state_dir)
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644), path
    except FileNotFoundError:
        if create:
            raise
        return None, path


def is_current(fd, path):
    """fd is still the file at path: a holder that ends removes the file while a waiter has the old one open,
    and a flock on a removed file locks nothing anyone else will open."""
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def try_flock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def directory_view(state_dir):
    """(entries other than the lock file as {name: inode}, atime ns, mtime ns) of the state directory."""
    info = os.stat(state_dir)
    with os.scandir(state_dir) as entries:
        names = {e.name: e.inode() for e in entries if e.name != LOCK_NAME}
    return names, info.st_atime_ns, info.st_mtime_ns


def clear(fd, path, state_dir, created_dir, before=None):
    """End of a hold, while still holding the flock: the lock file goes, and so does the state directory when
    this run's lock created it and nothing else is in it, so a target refused after its lock changes nothing.
    before: directory_view() from before this run made the lock file; when the directory holds the very
    entries it held then, its times are put back too (only the lock file came and went)."""
    with contextlib.suppress(OSError):
        if is_current(fd, path):
            os.unlink(path)
    if created_dir:
        with contextlib.suppress(OSError):
            os.rmdir(state_dir)
            return
    if before:
        with contextlib.suppress(OSError):
            names, atime, mtime = before
            if directory_view(state_dir)[0] == names:
                os.utime(state_dir, ns=(atime, mtime))


def current_holder(state_dir):
    """The record of the lock file as it is now ({} when there is none)."""
    fd, _ = open_lock(state_dir, create=False)
    if fd is None:
        return {}
    try:
        return read_record(fd)
    finally:
        os.close(fd)


def probe(state_dir, token):
    """What a run finds without waiting: 'free', 'ours' (this run holds it) or 'busy', and the record."""
    fd, _ = open_lock(state_dir, create=False)
    if fd is None:
        return "free", {}
    try:
        record = read_record(fd)
        if try_flock(fd):
            return "free", record
        if record.get("token") == token and holder_alive(record):
            return "ours", record
        return "busy", record
    finally:
        os.close(fd)


def acquire(
    state_dir,
    token,
    record,
    timeout,
    on_wait=None,
    spawn=None,
    prepare=None,
    take_over="",
    clock=time.monotonic,
    subject="this host",
):
    """Take the lock for the run named by `token` and hand its descriptor to spawn(fd, record) (which keeps it
    beyond this process: fork_holder on a host, a callable in tests). prepare() makes sure the state directory
    exists and says whether it made it. Waits up to `timeout` seconds for another run; on_wait(message) is
    called once when it has to. Returns (state, notes): state 'acquired' or 'ours'; notes are sentences for the
    user (a lock taken over from a holder that died without clearing it). take_over names a holder's token the
    controller found no longer running (its helper can outlive it over SSH, tied to a connection the next run
    shares): that helper is stopped and the lock taken. Raises RunLockError on timeout."""
    deadline = clock() + timeout
    told = False
    created_dir = False
    notes = []
    while True:
        created_dir = (prepare() if prepare else False) or created_dir
        try:
            before = None if os.path.lexists(lock_path(state_dir)) else directory_view(state_dir)
            fd, path = open_lock(state_dir)
        except FileNotFoundError:  # the state directory went with the run that made it: make it again
            if prepare is None:
                raise
            continue
        try:
            previous = read_record(fd)
            if try_flock(fd):
                if not is_current(fd, path):
                    continue  # the holder ended and removed this file: take the new one
                notes = notes or ([takeover_message(previous)] if previous else [])
                record = {**record, "state_dir": state_dir, "created_dir": created_dir, "dir_before": before}
                write_record(fd, record)
                (spawn or fork_holder)(fd, record)
                return "acquired", notes
            if previous.get("token") == token and holder_alive(previous):
                return "ours", []
            if take_over and previous.get("token") == take_over and not notes:
                notes = [takeover_message(previous)]
                stop_helper(previous)  # it clears the lock and ends; a later turn of the loop takes it
                deadline = max(deadline, clock() + 30)
            if clock() >= deadline:
                raise RunLockError(timeout_message(previous, timeout, path, subject))
            if not told and on_wait is not None:
                on_wait(waiting_message(previous, timeout, subject))
                told = True
        finally:
            os.close(fd)
        time.sleep(POLL_SECONDS)


def stop_helper(record):
    """SIGTERM to the helper a record names, when that very process still runs."""
    if holder_alive(record):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(record["helper_pid"]), signal.SIGTERM)


def release(state_dir, token, wait=30.0):
    """End this run's hold: its helper clears the lock and ends. False when the lock is not this run's."""
    fd, path = open_lock(state_dir, create=False)
    if fd is None:
        return False
    try:
        record = read_record(fd)
        if record.get("token") != token:
            return False
        stop_helper(record)
        deadline = time.monotonic() + wait
        while not try_flock(fd):  # the helper holds it until it has cleared the lock and ended
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        # When the helper had died without clearing:
        clear(fd, path, state_dir, record.get("created_dir"), record.get("dir_before"))
        return True
    finally:
        os.close(fd)


def wait_for_exit(pid, start):
    """Return when the process (pid, start) has ended: at once via a pidfd where Linux has one, else by
    polling (which also sees a reused pid as the end)."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    if pidfd is not None and is_alive(pid, start):
        select.select([pidfd], [], [])
        return
    while is_alive(pid, start):
        time.sleep(1)


class _Released(Exception):
    pass


def _on_term(_signum, _frame):
    raise _Released


def hold(fd, record):
    """The helper's life: keep fd (the lock) until the owner ends or release() sends SIGTERM, then clear it.
    Only a helper killed itself (kill -9 of it, a crash) leaves its record, which the next run takes over."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of the run is for the run, which then ends
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(_Released):
        wait_for_exit(record["owner_pid"], record["owner_start"])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    clear(
        fd,
        lock_path(record["state_dir"]),
        record["state_dir"],
        record.get("created_dir"),
        record.get("dir_before"),
    )


def own_source():
    """This file's text (from Ansible's module zip on a host), for the helper to run after exec."""
    try:
        return inspect.getsource(sys.modules[__name__])
    except (OSError, TypeError, KeyError):
        return ""


# The helper runs as a fresh interpreter: with a clean environment (nothing of the run's, which a test or a
# user tells the run's processes by, stays alive in it after the run) and none of the module's memory. It
# reads this file's text from a pipe, then holds the lock with the same code.
HELPER_BOOTSTRAP = (
    "import os, sys; r = int(sys.argv[2]); "
    "src = b''.join(iter(lambda: os.read(r, 65536), b'')); os.close(r); "
    "ns = {'__name__': 'sdenv_run_lock_helper'}; exec(compile(src, 'sdenv_run_lock', 'exec'), ns); "
    "ns['helper_main'](int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))"
)


def tell_ready(ready):
    """Tell the module the helper is set up. The module may be gone already (its run killed meanwhile): the
    helper goes on all the same, to see its run's end and clear the lock."""
    with contextlib.suppress(OSError):
        os.write(ready, b"1")
    with contextlib.suppress(OSError):
        os.close(ready)


def helper_main(fd, record_json, ready):
    """The helper after exec: tell the module it is set up, hold the lock until its run ends, then clear it."""
    try:
        tell_ready(ready)
        hold(fd, json.loads(record_json))
    finally:
        os._exit(0)


def fork_holder(fd, record):
    """Fork the helper that keeps fd locked after this module ends; it records its own pid and start time.
    The module waits for its word that it is set up (own session, no descriptor of Ansible's left open, so
    Ansible's read of the module's output ends) before returning."""
    source = own_source().encode("utf-8")
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper
        try:
            os.close(ready_read)
            os.setsid()  # out of the run's process group and terminal: only the owner's end ends it
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            keep = {fd, ready_write, 0, 1, 2}
            for other in range(3, 1024):
                if other not in keep:
                    with contextlib.suppress(OSError):
                        os.close(other)
            record = {**record, "helper_pid": os.getpid(), "helper_start": start_token(os.getpid())}
            write_record(fd, record)
            if source and len(source) < 60000:  # fits a pipe's buffer: written whole before the exec
                source_read, source_write = os.pipe()
                os.write(source_write, source)
                os.close(source_write)
                os.set_inheritable(fd, True)
                os.set_inheritable(source_read, True)
                os.set_inheritable(ready_write, True)
                with contextlib.suppress(OSError):
                    argv = [sys.executable, "-c", HELPER_BOOTSTRAP, "sdenv-run-lock-helper"]
                    env = {"PATH": os.defpath, "LC_ALL": "C"}
                    args = [str(source_read), str(fd), json.dumps(record), str(ready_write)]
                    os.execve(sys.executable, [*argv, *args], env)  # noqa: S606
            tell_ready(ready_write)
            hold(fd, record)  # no interpreter to exec: hold it in this process
        finally:
            os._exit(0)
    os.close(ready_write)
    try:
        if os.read(ready_read, 1) != b"1":
            raise RunLockError("The run lock's helper process did not start: run again.")
    finally:
        os.close(ready_read)
