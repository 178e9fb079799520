"""Helpers shared by the integration tests: run make targets, manage throwaway accounts."""

import contextlib
import os
import pwd
import re
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestInventory:
    """An inventory file written for one test: use it wherever a path is expected."""

    __test__ = False  # a helper, not a test class, wherever a test module imports it

    def __init__(self, path, user, state_dir, variables):
        self.path, self.user, self.state_dir, self.variables = path, user, state_dir, variables

    def __fspath__(self):
        return str(self.path)

    def __str__(self):
        return str(self.path)


class MakeResult:
    def __init__(self, completed):
        self.returncode = completed.returncode
        self.output = completed.stdout

    @property
    def recap(self):
        """{'ok': n, 'changed': n, 'failed': n, ...} summed over the PLAY RECAP lines."""
        totals = {}
        for line in self.output.splitlines():
            if re.search(r"\bok=\d+\s+changed=\d+", line):
                for key, value in re.findall(r"(\w+)=(\d+)", line):
                    totals[key] = totals.get(key, 0) + int(value)
        return totals

    def __repr__(self):
        return f"<make exit {self.returncode}>\n{self.output[-6000:]}"


def make_argv(target, inventory=None, **variables):
    """`make TARGET [INVENTORY=...] VAR=value...` in the repository, as a user types it."""
    argv = ["make", "--no-print-directory", "-C", str(ROOT), target]
    if inventory:
        argv.append(f"INVENTORY={inventory}")
    return argv + [f"{key}={value}" for key, value in variables.items()]


def run_make(target, inventory=None, timeout=1800, stdin=subprocess.DEVNULL, env=None, **variables):
    """Run `make TARGET VAR=value...` in the repository; returns MakeResult (never raises on failure)."""
    completed = subprocess.run(
        make_argv(target, inventory, **variables),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})},
        check=False,
    )
    return MakeResult(completed)


def user_exists(name):
    return subprocess.run(["getent", "passwd", name], capture_output=True, check=False).returncode == 0


def remove_user(name):
    """Remove a test account and its home; only ever called with names this suite generated."""
    assert name.startswith("sdt"), name
    if user_exists(name):
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
    shutil.rmtree(f"/home/{name}", ignore_errors=True)


def ansiballz_payload_dirs(module):
    """AnsiballZ's payload directories of `module` in the temp directory: it removes its own when the module
    ends, so a test that kills a module on purpose removes the ones that appeared meanwhile."""
    import tempfile

    return set(Path(tempfile.gettempdir()).glob(f"ansible_{module}_payload_*"))


def remove_payload_dirs_left_by_a_kill(module, before):
    """Remove the payload directories of `module` that appeared since `before` (and only that shape)."""
    for leftover in ansiballz_payload_dirs(module) - before:
        if [p.name for p in leftover.iterdir()] == [f"ansible_{module}_payload.zip"]:
            shutil.rmtree(leftover, ignore_errors=True)


def system_tmp_dirs():
    """Ansible's temp directories in /var/tmp: where a task run as an unprivileged become user keeps its module
    when it is not piped (ANSIBLE_REMOTE_TMP does not apply to those; keep_remote_files keeps them for good)."""
    return set(Path("/var/tmp").glob("ansible-tmp-*"))


def remove_system_tmp_dirs_of(user, before):
    """Remove the directories of system_tmp_dirs() that `user` (a test's throwaway account) made since `before`."""
    for leftover in system_tmp_dirs() - before:
        with contextlib.suppress(OSError, KeyError):
            if pwd.getpwuid(leftover.stat().st_uid).pw_name == user:
                shutil.rmtree(leftover, ignore_errors=True)


def files_holding(secret, roots, since, max_bytes=64 << 20):
    """Paths under `roots` whose name or content holds `secret`, among the entries changed since `since` (epoch
    seconds; a secret made during the test can only be in a file written after it). Files larger than
    `max_bytes` are not read: what Ansible and the toolkit write around a secret (module payloads, job and
    progress files, logs, records) is small, and the large files here are models."""
    needle = secret.encode()
    hits = []
    for root in roots:
        for directory, dirnames, filenames in os.walk(root, onerror=lambda _error: None):
            for name in dirnames + filenames:
                path = os.path.join(directory, name)
                if secret in name:
                    hits.append(path)
                    continue
                if name in dirnames:
                    continue
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                changed = max(info.st_mtime, info.st_ctime) >= since
                small_file = stat.S_ISREG(info.st_mode) and info.st_size <= max_bytes
                if changed and small_file and _holds(path, needle):
                    hits.append(path)
    return hits


def _holds(path, needle):
    tail = b""
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                if needle in tail + block:
                    return True
                tail = block[-len(needle) :]
    except OSError:
        return False
    return False


def processes_marked(marker):
    """Live processes whose environment holds `marker`: everything one test started, however deep (the
    Ansible workers leave make's process group, so a group is not enough) and nothing anyone else did."""
    return _processes_whose("environ", marker)


def command_lines_holding(secret):
    """Live processes whose command line holds `secret` (a secret must never be an argument)."""
    return _processes_whose("cmdline", secret)


def _processes_whose(proc_file, text):
    needle = text.encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/{proc_file}", "rb") as handle:
                if needle in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
