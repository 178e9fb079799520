"""Progress of the WebUI's long steps (git clone/fetch, the venv install), written for the controller to show.

The module writes a small JSON document to the progress file its action plugin names; the action's watch
(plugins/module_utils/sdenv_progress.py, the same one model_file's download uses) reads it every few seconds
and prints `[host] WebUI tree  clone Receiving objects   45.0% 1234/2742 objects  12.3 MB  5.7 MB/s ...`.

- git: clone and fetch run with --progress; git then writes its counters to stderr even without a terminal,
  each update ending in \\r, each phase in \\n (`Receiving objects:  45% (1234/2742), 12.34 MiB | 5.67 MiB/s`).
  GitProgress reads that stream and keeps the latest counters; the other lines are kept for error messages.
- uv: `uv pip sync` prints no progress without a terminal (only its summary at the end), so the venv step
  shows what can be measured from outside: the growth of uv's cache directory in MB and the packages the
  lock names; no ETA, since the lock holds no sizes.
"""

import contextlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time

UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
GIT_PROGRESS = re.compile(
    r"^(?:remote: )?(?P<phase>[A-Z][a-z]+(?: [a-z]+)*):\s+(?P<percent>\d+)% \((?P<done>\d+)/(?P<total>\d+)\)"
    r"(?:, (?P<size>[\d.]+) (?P<unit>bytes|KiB|MiB|GiB)(?: \| (?P<rate>[\d.]+) (?P<rate_unit>bytes|KiB|MiB|GiB)/s)?)?"
)
WRITE_SECONDS = 1.0


def parse_git_progress(line):
    """One progress update of git's stderr as a dict (phase, done, total, bytes, rate), or None."""
    match = GIT_PROGRESS.match(line.strip())
    if not match:
        return None
    found = {"phase": match["phase"], "done": int(match["done"]), "total": int(match["total"])}
    if match["size"]:
        found["bytes"] = int(float(match["size"]) * UNITS[match["unit"]])
    if match["rate"]:
        found["rate"] = float(match["rate"]) * UNITS[match["rate_unit"]]
    return found


def write_progress(path, doc):
    """Replace the progress file in one rename; a progress file that cannot be written is no failure."""
    if not path:
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sdenv-progress-", dir=os.path.dirname(path) or ".")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle)
        os.replace(tmp, path)
    except OSError:
        pass


def remove_progress(path):
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


class GitProgress:
    """Reads git's stderr as it comes: the latest counters become the progress document, the rest is kept."""

    def __init__(self, name, action, progress_file="", now=time.monotonic):
        self.name, self.action, self.progress_file, self.now = name, action, progress_file, now
        self.pending = ""
        self.kept = []
        self.doc = None
        self.receiving_since = None
        self.last_write = None

    def feed(self, text):
        self.pending += text
        *complete, self.pending = re.split(r"[\r\n]", self.pending)
        for line in complete:
            self.line(line)

    def close(self):
        if self.pending:
            self.line(self.pending)
            self.pending = ""

    def line(self, line):
        found = parse_git_progress(line)
        if found is None:
            if line.strip():
                self.kept.append(line.rstrip())
            return
        now = self.now()
        doc = {"name": self.name, "phase": f"{self.action} {found['phase']}", "count": found["done"],
               "count_total": found["total"], "count_unit": "objects"}  # fmt: skip
        if "bytes" in found:
            doc["received"] = found["bytes"]
        if "rate" in found:
            doc["rate"] = found["rate"]
        if found["phase"] == "Receiving objects":
            # ETA by the share of objects still to come (objects differ in size: an estimate).
            if self.receiving_since is None:
                self.receiving_since = now
            spent = now - self.receiving_since
            if found["done"] and spent > 0:
                doc["eta"] = spent * (found["total"] - found["done"]) / found["done"]
        self.doc = doc
        if self.last_write is None or now - self.last_write >= WRITE_SECONDS:
            write_progress(self.progress_file, doc)
            self.last_write = now

    def stderr(self):
        return "\n".join(self.kept)


def run_with_progress(argv, cwd, env, progress):
    """Run argv (git ... --progress), feeding its stderr to progress (a GitProgress) as it arrives.
    Returns a CompletedProcess whose stderr holds the lines that were not progress (for error messages)."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True)
    reader.start()
    try:
        for block in iter(lambda: os.read(process.stderr.fileno(), 65536), b""):
            progress.feed(block.decode("utf-8", "replace"))
        progress.close()
        returncode = process.wait()
        reader.join()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
        remove_progress(progress.progress_file)
    return subprocess.CompletedProcess(
        argv, returncode, (out[0] if out else b"").decode("utf-8", "replace"), progress.stderr()
    )


def lock_packages(text):
    """How many packages a hashed lock (requirements format) names: one `name==version` line each."""
    return sum(
        1 for line in text.splitlines() if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==", line)
    )


def tree_size(path):
    """Bytes under path (files only, links not followed); a file that goes away while counted is skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def venv_doc(name, phase, packages, grown, rate):
    """The venv step's progress: packages the lock names (the count uv reaches is not printed), the cache's
    growth and its rate; no ETA: the lock holds no sizes."""
    return {"name": name, "phase": phase, "count": packages, "count_unit": "packages in the lock",
            "received": grown, "rate": rate, "note": "uv cache growth; no ETA: the lock has no sizes"}  # fmt: skip


class CacheWatch(threading.Thread):
    """While uv installs: every few seconds, the growth of uv's cache directory written as the progress doc."""

    def __init__(self, progress_file, cache_dir, name, phase, packages, every=5.0):
        super().__init__(name="sdenv-cache-watch", daemon=True)
        self.progress_file, self.cache_dir, self.name, self.phase = progress_file, cache_dir, name, phase
        self.packages, self.every = packages, every
        self.done = threading.Event()

    def run(self):
        start = tree_size(self.cache_dir)
        last, last_time = start, time.monotonic()
        while not self.done.wait(self.every):
            size, now = tree_size(self.cache_dir), time.monotonic()
            rate = max(0.0, (size - last) / (now - last_time)) if now > last_time else 0.0
            last, last_time = size, now
            write_progress(
                self.progress_file, venv_doc(self.name, self.phase, self.packages, size - start, rate)
            )

    def stop(self):
        self.done.set()
        if self.is_alive():
            self.join(timeout=10)
        remove_progress(self.progress_file)
