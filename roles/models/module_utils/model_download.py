# Install one model file pinned by SHA256: accept it when present and unchanged, else download, verify and
# rename it into place. The logic of the model_file module; stdlib only (runs on the target host, Python >= 3.9).
#
# Invariants:
# - Nothing unverified ever sits at `dest`: bytes go to `<dest>.part` (O_NOFOLLOW, owned by the caller until
#   verified), are fsynced, checked (size, SHA256, safetensors structure or pickle scan), given their owner
#   and mode, then renamed over `dest`, and the directory is fsynced.
# - A present file is accepted without reading it when its size/mtime/inode match the stat-cache entry
#   recorded for the pinned SHA256; otherwise it is hashed.
# - `<dest>.part` survives an interruption (kill -9, cut connection) and is resumed with Range next time;
#   its SHA256 state is rebuilt by reading the part once, because hashlib state cannot be saved.
# - A file whose SHA256, size or structure is wrong is never installed; it is kept for inspection in
#   `<state>/models/rejected/` (beside the stat cache: 0700 directory, 0600 file), never in the WebUI's
#   model folder, where the dummy could read or move what a URL sent.
# - The token goes only to the hosts allowed for it (token_hosts.py), never to a mirror, a bundle, plain
#   http or across a redirect; local files are read only inside the bundle directories, with no link below.
# - One writer per `.part`: a download holds an exclusive lock (flock on `<state>/.<file>.lock`) from before
#   it touches the part until the file is installed; a second run on the same file waits, then accepts what
#   the first one installed (or resumes what it left).
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import struct
import time
from urllib.parse import unquote, urljoin, urlsplit

# The network, thread and pickle modules are imported where they are used: the re-run fast path (a present,
# unchanged file) must not pay for them (http.client + ssl alone cost ~30 ms of a ~10 ms budget).
try:
    from ansible.module_utils.model_fastpath import cached_entry, default_stat_cache
    from ansible.module_utils.safetensors_check import SafetensorsError, check_file, describe_non_model
    from ansible.module_utils.sdenv_atomic import (
        LinkRefused,
        fsync_dir_fd,
        makedirs_nofollow,
        open_dir_nofollow,
    )
    from ansible.module_utils.sdenv_pipeline import HashWritePipeline
    from ansible.module_utils.stat_cache import StatCache, write_json_atomic
    from ansible.module_utils.token_hosts import DEFAULT_TOKEN_HOSTS, origin_of, show_origin, token_allowed
except ImportError:
    try:  # installed as the Ansible collection sdenv.toolkit (galaxy.yml)
        from ansible_collections.sdenv.toolkit.plugins.module_utils.model_fastpath import (
            cached_entry,
            default_stat_cache,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.safetensors_check import (
            SafetensorsError,
            check_file,
            describe_non_model,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_atomic import (
            LinkRefused,
            fsync_dir_fd,
            makedirs_nofollow,
            open_dir_nofollow,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_pipeline import HashWritePipeline
        from ansible_collections.sdenv.toolkit.plugins.module_utils.stat_cache import (
            StatCache,
            write_json_atomic,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.token_hosts import (
            DEFAULT_TOKEN_HOSTS,
            origin_of,
            show_origin,
            token_allowed,
        )
    except ImportError:  # unit tests import the module_utils directories directly
        from model_fastpath import cached_entry, default_stat_cache
        from safetensors_check import SafetensorsError, check_file, describe_non_model
        from sdenv_atomic import LinkRefused, fsync_dir_fd, makedirs_nofollow, open_dir_nofollow
        from sdenv_pipeline import HashWritePipeline
        from stat_cache import StatCache, write_json_atomic
        from token_hosts import DEFAULT_TOKEN_HOSTS, origin_of, show_origin, token_allowed

CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 10
# A cut connection or an expired presigned URL is retried (resuming, from the original URL) this often.
RETRIES_PER_SOURCE = 3
PROGRESS_INTERVAL = 0.5
USER_AGENT = "sdenv-model-file/1"
MB = 1_000_000


class ModelFileError(Exception):
    """One sentence for the user: what happened to which file, and what to do."""


class SourceError(Exception):
    """One source failed; the next one may work. `fatal` stops trying further sources (e.g. a full disk)."""

    def __init__(self, message, fatal=False):
        super().__init__(message)
        self.fatal = fatal


class _Retry(Exception):
    """A transient failure inside one source: ask the original URL again, resuming."""


class Spec:
    """What to install. Plain attributes so the module and the tests build it the same way."""

    def __init__(
        self,
        dest,
        urls,
        sha256=None,
        size=None,
        token=None,
        token_env=None,
        token_hosts=None,
        uid=-1,
        gid=-1,
        mode=0o644,
        stat_cache=None,
        progress_file=None,
        allow_ckpt=False,
        addnet_hash=False,
        deep=False,
        allow_unpinned=False,
        timeout=60.0,
        name=None,
        lock_file=None,
        bundle_dirs=None,
        rejected_dir=None,
        dirs_below=None,
    ):
        self.dest = os.path.abspath(dest)
        self.urls = list(urls or [])
        self.sha256 = (sha256 or "").strip().lower() or None
        self.size = size
        self.token = token
        self.token_env = token_env
        # Where the token may go (token_hosts.py): Civitai's download host unless the caller says otherwise.
        self.token_hosts = list(DEFAULT_TOKEN_HOSTS if token_hosts is None else token_hosts)
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.stat_cache = stat_cache or default_stat_cache(self.dest)
        self.progress_file = progress_file
        self.allow_ckpt = allow_ckpt
        self.addnet_hash = addnet_hash
        self.deep = deep
        self.allow_unpinned = allow_unpinned
        self.timeout = timeout
        self.name = name or os.path.basename(self.dest)
        # Local files (file:// URLs, file paths) are read only inside these and the bundle directories among
        # the sources.
        self.bundle_dirs = [os.path.abspath(d) for d in bundle_dirs or ()]
        # A rejected download is kept beside the stat cache (the root-only state directory), never in the
        # WebUI's model folder, where the dummy could read or move it (it may be anything a URL sent).
        self.rejected_dir = rejected_dir or os.path.join(os.path.dirname(self.stat_cache), "rejected")
        # The directory (the WebUI's) under which the model folder is made when missing, owned as the file.
        self.dirs_below = dirs_below
        # Beside the stat cache (the root-only state directory), not in the WebUI's model folder.
        self.lock_file = lock_file or os.path.join(
            os.path.dirname(self.stat_cache), "." + os.path.basename(self.dest) + ".lock"
        )

    @property
    def part(self):
        return self.dest + ".part"

    @property
    def rejected(self):
        return os.path.join(self.rejected_dir, os.path.basename(self.dest) + ".rejected")

    @property
    def is_safetensors(self):
        return self.dest.lower().endswith(".safetensors")


# --- hashing --------------------------------------------------------------------------------------------


class StreamHash:
    """SHA256 of everything fed, plus optionally the kohya "addnet" hash (SHA256 of the bytes after the
    safetensors header) that the WebUI shows and caches for LoRAs."""

    def __init__(self, addnet=False):
        self.sha = hashlib.sha256()
        self.addnet = hashlib.sha256() if addnet else None
        self.length = 0
        self._head = b""
        self._data_start = None

    def update(self, data):
        if self.addnet is not None:
            self._feed_addnet(data)
        self.sha.update(data)
        self.length += len(data)

    def _feed_addnet(self, data):
        start = self.length
        if self._data_start is None:
            self._head += bytes(data[: max(0, 8 - start)])
            if len(self._head) >= 8:
                self._data_start = 8 + struct.unpack("<Q", self._head[:8])[0]
        if self._data_start is not None:
            skip = self._data_start - start
            if skip < len(data):
                self.addnet.update(data[max(0, skip) :])

    def hexdigest(self):
        return self.sha.hexdigest()

    def addnet_hexdigest(self):
        return self.addnet.hexdigest() if self.addnet is not None else None


def hash_file(path, addnet=False, limit=None, progress=None, dir_fd=None):
    """StreamHash of the file at `path` (its first `limit` bytes when given), read in 1 MiB chunks.
    dir_fd: `path` is opened by its name in that directory (a descriptor model_download opened safely)."""
    hasher = StreamHash(addnet=addnet)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(
        path if dir_fd is None else os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd
    )
    try:
        remaining = limit
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            n = os.readv(fd, [view[:want]])
            if n == 0:
                break
            hasher.update(view[:n])
            if remaining is not None:
                remaining -= n
            if progress:
                progress.advance(n)
    finally:
        os.close(fd)
    return hasher


# --- progress -------------------------------------------------------------------------------------------


class Progress:
    """Writes {phase, received, total, rate, eta} to a JSON file at most every PROGRESS_INTERVAL seconds, for
    the controller-side action plugin (action_plugins/model_file.py) to show as percent, MB/s and ETA."""

    def __init__(self, path, name, clock=time.monotonic):
        self.path = path
        self.name = name
        self.clock = clock
        self.phase = "starting"
        self.detail = None
        self.source = None
        self.total = None
        self.received = 0
        self.offset = 0
        self.started = clock()
        self._last = 0.0

    def begin(self, phase, source=None, total=None, offset=0, detail=None):
        self.phase = phase
        self.detail = detail
        self.source = source
        self.total = total
        self.received = offset
        self.offset = offset
        self.started = self.clock()
        self.write(force=True)

    def advance(self, n):
        self.received += n
        self.write()

    def rate(self):
        elapsed = self.clock() - self.started
        moved = self.received - self.offset
        return moved / elapsed if elapsed > 0 else 0.0

    def snapshot(self):
        rate = self.rate()
        eta = None
        if self.total and rate > 0:
            eta = max(0.0, (self.total - self.received) / rate)
        return {
            "name": self.name,
            "phase": self.phase,
            "detail": self.detail,
            "source": _redact(self.source) if self.source else None,
            "received": self.received,
            "total": self.total,
            "rate": rate,
            "eta": eta,
            "pid": os.getpid(),
        }

    def write(self, force=False):
        if not self.path:
            return
        now = self.clock()
        if not force and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        # Progress is a courtesy: never fail a download over it.
        with contextlib.suppress(OSError):
            write_json_atomic(self.path, self.snapshot(), mode=0o600)

    def remove(self):
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _redact(url):
    """A URL without its query (presigned signatures, ?token=) and without user:password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        if parts.port:
            host = "%s:%d" % (host, parts.port)
        return f"{parts.scheme}://{host}{parts.path}"
    return url


# --- one writer per part -------------------------------------------------------------------------------


class DownloadLock:
    """An exclusive flock held for a whole download, so two runs never write the same `.part`. The lock
    file is never removed (removing it would race with a run that has it open and waits on it); the kernel
    releases the lock when its holder exits, also on kill -9. It holds only the holder's pid, for the
    waiting run's message."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.waited_for = None  # the holder's pid line when this run had to wait, else None

    def acquire(self, on_wait):
        import fcntl

        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)  # as the stat cache beside it
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.waited_for = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
                on_wait(self.waited_for)
                fcntl.flock(fd, fcntl.LOCK_EX)  # a stop signal interrupts the wait
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def holder(path):
        """Who holds the lock now (their pid line), or None; takes nothing and creates nothing."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
        except OSError:
            return None
        finally:
            os.close(fd)
        return None


# --- HTTP -----------------------------------------------------------------------------------------------


def _origin(url):
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def _connect(url, timeout):
    """(connection, request target), through the proxy the environment names (sdenv_http)."""
    try:
        from ansible.module_utils.sdenv_http import connect
    except ImportError:
        try:  # installed as the Ansible collection sdenv.toolkit
            from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_http import connect
        except ImportError:  # unit tests import the module_utils directories directly
            from sdenv_http import connect

    if urlsplit(url).scheme not in ("http", "https"):
        raise SourceError(f"{_redact(url)} is not an http(s) URL")
    return connect(url, timeout, os.environ)


def open_http(url, headers, token, timeout):
    """GET `url` following redirects; Authorization goes only to the original origin (scheme, host, port),
    and never again once a redirect has left it. The caller passes a token only for an origin the token's
    allow-list names (Installer._token_for). Returns (connection, response, final_url)."""
    origin = _origin(url)
    trusted = True
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        trusted = trusted and _origin(current) == origin
        request_headers = dict(headers)
        if token and trusted:
            request_headers["Authorization"] = "Bearer " + token
        conn, target = _connect(current, timeout)
        request_headers.update(getattr(conn, "sdenv_proxy_headers", {}))
        try:
            conn.request("GET", target, headers=request_headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status in REDIRECTS:
            location = resp.getheader("Location")
            resp.read(65536)
            conn.close()
            if not location:
                raise SourceError(
                    "%s redirected (HTTP %d) without a Location" % (_redact(current), resp.status)
                )
            current = urljoin(current, location)
            continue
        return conn, resp, current
    raise SourceError("%s redirected more than %d times" % (_redact(url), MAX_REDIRECTS))


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.I)


def parse_content_range(value):
    """(start, end, total) from a Content-Range header; members are None where the header has '*'."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    start, end, total = m.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total != "*" else None,
    )


# --- the installer --------------------------------------------------------------------------------------


class Installer:
    def __init__(self, spec, check_mode=False, log=None):
        self.spec = spec
        self.check_mode = check_mode
        self.log = log or (lambda msg: None)
        self.cache = StatCache(spec.stat_cache)
        self.progress = Progress(spec.progress_file, spec.name)
        self.result = {
            "changed": False,
            "dest": spec.dest,
            "name": spec.name,
            "sha256": spec.sha256,
            "verified_by": None,
            "source": None,
            "bytes_downloaded": 0,
            "resumed_from": 0,
            "attempts": [],
            "warnings": [],
        }
        self._hasher = None
        self._dir_fd = None
        if self.cache.problem:
            self.result["warnings"].append(self.cache.problem)

    # -- public --

    def run(self, download=True):
        """Bring `dest` to the pinned file. download=False: only say whether a download is needed."""
        try:
            return self._run(download)
        finally:
            self.close()

    def close(self):
        """Let go of the model folder's descriptor (a later look opens it again)."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _dfd(self, create=False):
        """The model folder, opened once with no symbolic link in any component (sdenv_atomic): root writes
        into the dummy's tree, where a link could send the model, its part or a chown to a root-owned place.
        Every file below is then reached by its name in this descriptor, so a folder swapped for a link
        later changes nothing. create: make it (and its parents up to dirs_below) when missing."""
        if self._dir_fd is None:
            spec = self.spec
            directory = os.path.dirname(spec.dest)
            if create and spec.dirs_below:
                self._dir_fd = makedirs_nofollow(directory, spec.dirs_below, 0o755, spec.uid, spec.gid)
            else:
                self._dir_fd = open_dir_nofollow(directory)
        return self._dir_fd

    def _run(self, download):
        spec = self.spec
        self._validate(create=download and not self.check_mode)
        before = self._describe(self._lstat(spec.dest))
        present = self._accept_present()
        if present is not None:
            self._finish_present(present, before)
            return self.result
        self.result["changed"] = True
        self.result["needs_download"] = True
        self.result["diff"] = {"before": before, "after": self._describe_wanted()}
        if self.check_mode or not download:
            self.result["msg"] = f"{spec.name} would be downloaded"
            self.result["partial_size"] = self.partial_size()
            self.result["downloading_elsewhere"] = DownloadLock.holder(spec.lock_file)
            return self.result
        with self._one_writer() as lock:
            if lock.waited_for is not None:
                # The other run has installed the file, failed, or been stopped (its part is kept): look again.
                self.cache = StatCache(spec.stat_cache)
                present = self._accept_present()
                if present is not None:
                    self._finish_present(present, before)
                    self.result["msg"] = (
                        f"{spec.name} was installed by another run ({lock.waited_for}) while this one waited; "
                        f"it is present and verified ({self.result['verified_by']})"
                    )
                    return self.result
            self._download_any()
        self.result["needs_download"] = False
        self.result["diff"]["after"] = self._describe(self._lstat(spec.dest))
        return self.result

    def partial_size(self):
        """Bytes kept in `<dest>.part` (None when there is no partial file)."""
        st = self._lstat(self.spec.part)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def stopped_sentence(self, reason):
        """What an interrupted run leaves, in one true sentence (it looks at the part as it is now)."""
        spec = self.spec
        kept = self.partial_size()
        if kept:
            return (
                f"the download of {spec.name} stopped because {reason}; {kept} bytes are kept in {spec.part}: "
                "run again to resume"
            )
        return f"{spec.name} was not installed: the run stopped because {reason}; no partial file is kept"

    @contextlib.contextmanager
    def _one_writer(self):
        spec = self.spec
        lock = DownloadLock(spec.lock_file)
        try:
            lock.acquire(on_wait=self._waiting)
        except OSError as exc:
            raise ModelFileError(
                f"cannot take the download lock {spec.lock_file} for {spec.name} ({exc.strerror or exc})"
            ) from None
        try:
            yield lock
        finally:
            lock.release()

    def _waiting(self, holder):
        self.result["waited_for"] = holder
        self.progress.begin(
            "waiting",
            source=self.spec.part,
            detail=f"another run ({holder}) is writing {self.spec.part}; waiting for it to finish",
        )

    # -- checks before anything moves --

    def _validate(self, create=False):
        spec = self.spec
        if spec.sha256 is None:
            if not spec.allow_unpinned:
                raise ModelFileError(
                    f"{spec.name} has no pinned SHA256: run `make pin-models` to download it, review its name, size, SHA256 "
                    "and source, and record them in lock.yml with CONFIRM=yes"
                )
        elif not SHA256_RE.match(spec.sha256):
            raise ModelFileError(f"the SHA256 pinned for {spec.name} is not 64 hex digits: {spec.sha256!r}")
        if spec.size is not None and (not isinstance(spec.size, int) or spec.size < 0):
            raise ModelFileError(f"the size pinned for {spec.name} is not a byte count: {spec.size!r}")
        if not spec.is_safetensors and not spec.allow_ckpt:
            raise ModelFileError(
                f"refusing {spec.name}: only .safetensors files are installed by default, because .ckpt/.pt files are "
                "pickles that can run code when loaded; use a .safetensors version or set allow_ckpt "
                "(its imports are then scanned)"
            )
        if not spec.urls:
            raise ModelFileError(f"{spec.name} has no URL or bundle directory to get it from")
        directory = os.path.dirname(spec.dest)
        try:
            self._dfd(create=create)
        except LinkRefused as exc:
            raise ModelFileError(f"refusing to install {spec.name}: {exc}") from None
        except (FileNotFoundError, NotADirectoryError):
            # A dry run, or a look before the download that will make it, may find it missing.
            if not (self.check_mode or (spec.dirs_below and not create)):
                raise ModelFileError(f"the directory {directory} for {spec.name} does not exist") from None

    def _lstat(self, path):
        """lstat of `path` (the dest, its part or its rejected file) in the model folder; None when absent."""
        try:
            return os.stat(os.path.basename(path), dir_fd=self._dfd(), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError, LinkRefused):
            # LinkRefused only on a look after the run (its sentence): _validate refused such a folder first.
            return None

    def _describe(self, st):
        if st is None:
            return {"state": "absent"}
        if not stat.S_ISREG(st.st_mode):
            return {"state": "not a regular file"}
        return {
            "state": "file",
            "size": st.st_size,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        }

    def _describe_wanted(self):
        spec = self.spec
        return {
            "state": "file",
            "sha256": spec.sha256,
            "size": spec.size,
            "uid": spec.uid,
            "gid": spec.gid,
            "mode": f"{spec.mode:04o}",
        }

    # -- the file already there --

    def _accept_present(self):
        """The stat of `dest` when it holds the pinned file (fast path or hash), else None."""
        spec = self.spec
        st = self._lstat(spec.dest)
        if st is None:
            return None
        if not stat.S_ISREG(st.st_mode):
            self.result["warnings"].append(f"{spec.dest} is not a regular file; it will be replaced")
            return None
        if spec.size is not None and st.st_size != spec.size:
            self.log("size %d differs from the pinned %d" % (st.st_size, spec.size))
            return None
        if not spec.deep:
            addnet = spec.addnet_hash and spec.is_safetensors
            entry = (
                cached_entry(self.cache, spec.dest, st, spec.sha256, spec.size, addnet)
                if spec.sha256
                else self._lookup_unpinned(st)
            )
            if entry is not None and (not addnet or entry.get("addnet_sha256")):
                self.result.update(verified_by="stat-cache", sha256=entry["sha256"])
                if entry.get("addnet_sha256"):
                    self.result["addnet_sha256"] = entry["addnet_sha256"]
                return st
        self.progress.begin("verifying", source=spec.dest, total=st.st_size)
        hasher = hash_file(
            spec.dest,
            addnet=spec.addnet_hash and spec.is_safetensors,
            progress=self.progress,
            dir_fd=self._dfd(),
        )
        actual = hasher.hexdigest()
        if spec.sha256 and actual != spec.sha256:
            self.result["replaced_sha256"] = actual
            self.cache.forget(spec.dest)
            return None
        try:
            self._check_structure(spec.dest)
        except SourceError as exc:
            self.result["warnings"].append(
                f"the present {spec.name} is not usable ({exc}); it will be replaced"
            )
            return None
        self.result.update(verified_by="hash", sha256=actual)
        if hasher.addnet_hexdigest():
            self.result["addnet_sha256"] = hasher.addnet_hexdigest()
        return st

    def _lookup_unpinned(self, st):
        entry = self.cache.entries.get(self.spec.dest)
        if entry and entry.get("sha256") and self.cache.lookup(self.spec.dest, st, entry["sha256"]):
            return entry
        return None

    def _finish_present(self, st, before):
        spec = self.spec
        changed = self._fix_owner_mode_path(spec.dest, st)
        st = self._lstat(spec.dest) if changed and not self.check_mode else st
        if not self.check_mode:
            self.cache.record(
                spec.dest, st, self.result["sha256"], addnet_sha256=self.result.get("addnet_sha256")
            )
            self.cache.save()
        self.progress.remove()
        self.result["changed"] = changed
        self.result["needs_download"] = False
        self.result["size"] = st.st_size
        self.result["mtime"] = st.st_mtime
        if changed:
            self.result["diff"] = {"before": before, "after": self._describe_wanted()}
        self.result["msg"] = "{} is present and verified ({})".format(spec.name, self.result["verified_by"])

    def _fix_owner_mode_path(self, path, st):
        spec = self.spec
        want_uid = st.st_uid if spec.uid == -1 else spec.uid
        want_gid = st.st_gid if spec.gid == -1 else spec.gid
        changed = (st.st_uid, st.st_gid) != (want_uid, want_gid) or stat.S_IMODE(st.st_mode) != spec.mode
        if changed and not self.check_mode:
            # Through an O_NOFOLLOW descriptor: a symlink planted at `path` is never followed.
            fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dfd())
            try:
                os.fchown(fd, want_uid, want_gid)
                os.fchmod(fd, spec.mode)
            finally:
                os.close(fd)
        return changed

    # -- downloading --

    def _download_any(self):
        spec = self.spec
        errors = []
        for source in spec.urls:
            try:
                self._from_source(source)
            except SourceError as exc:
                errors.append(str(exc))
                self.result["attempts"].append({"source": _redact(source), "error": str(exc)})
                if exc.fatal:
                    break
                continue
            self.result["attempts"].append({"source": _redact(source), "error": None})
            self.result["source"] = _redact(source)
            self.progress.remove()
            return
        self.progress.remove()
        if len(errors) == 1:
            raise ModelFileError(errors[0])
        raise ModelFileError(
            "no source gave a verified %s (%d tried): %s" % (spec.name, len(errors), "; ".join(errors))
        )

    def _from_source(self, source):
        spec = self.spec
        local = _local_path(source, os.path.basename(spec.dest))
        try:
            if local is not None:
                self._copy_local(source, local, self._local_root(source, local))
            else:
                self._fetch_http(source)
            self._verify_and_install(source)
        except FileNotFoundError as exc:
            names = (spec.part, os.path.basename(spec.part))
            if exc.filename not in names and exc.filename2 not in names:
                raise
            # Nothing in this run removes the part while it holds the lock: something else did.
            raise SourceError(
                f"{spec.part} disappeared while {spec.name} was being downloaded (something other than this run "
                "removed it); nothing was installed: run again to download it",
                fatal=True,
            ) from None

    def _bundle_dirs(self):
        """The directories local files may come from: the bundle directories among the sources (an absolute
        path that is a directory) and those the caller names (spec.bundle_dirs)."""
        spec = self.spec
        found = [os.path.normpath(d) for d in spec.bundle_dirs]
        found += [os.path.normpath(s) for s in spec.urls if s.startswith("/") and os.path.isdir(s)]
        return list(dict.fromkeys(found))

    def _local_root(self, source, path):
        """The bundle directory holding `path`. A file:// URL (the lock's) or a file path elsewhere is refused
        before anything is opened: a file:///etc/shadow entry must not become a copy the dummy can read."""
        path = os.path.normpath(path)
        roots = self._bundle_dirs()
        for root in roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return root
        if source.startswith("/") and not os.path.lexists(source):
            raise SourceError(
                f"{self.spec.name} is not in {_redact(source)}"
            )  # a bundle directory not made yet
        raise SourceError(
            f"{_redact(source)} is outside the bundle directories ({', '.join(roots) or 'none'}): a file:// URL"
            f" or a file path for {self.spec.name} must name a file inside one of them; nothing was read from it"
        )

    def _open_local(self, source, root, path):
        """A descriptor of the regular file `path` below `root`, opened one component at a time with no
        symbolic link followed below the bundle directory (openat + O_NOFOLLOW: nothing can swap a link in
        between a check and the open)."""
        spec = self.spec
        relative = os.path.relpath(os.path.normpath(path), root)
        parts = [] if relative == "." else relative.split("/")
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                flags = (
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                )
                next_fd = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SourceError(f"{_redact(source)} is not a regular file, so it is not {spec.name}")
        except FileNotFoundError:
            os.close(fd)
            raise SourceError(f"{spec.name} is not in {_redact(source)}") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise SourceError(
                    f"{_redact(source)} goes through a symbolic link inside {root}; only regular files in a bundle"
                    f" directory are read: copy {spec.name} there instead of linking it"
                ) from None
            raise SourceError(f"cannot read {_redact(source)} ({exc.strerror or exc})") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _copy_local(self, source, path, root):
        spec = self.spec
        fd = self._open_local(source, root, path)
        try:
            os.set_blocking(fd, True)
            total = os.fstat(fd).st_size
            self._check_space(total)
            self._discard_part()
        except BaseException:
            os.close(fd)
            raise
        self.progress.begin("copying", source=path, total=total)
        hasher = StreamHash(addnet=spec.addnet_hash and spec.is_safetensors)
        with os.fdopen(fd, "rb") as src, self._writing_part(keep=False, offset=0, hasher=hasher) as pipe:
            while True:
                n = src.readinto(pipe.take())
                if not n:
                    break
                pipe.give(n)
                self.progress.advance(n)
        self._hasher = hasher

    def _fetch_http(self, url):
        spec = self.spec
        if urlsplit(url).scheme not in ("http", "https"):
            raise SourceError(f"{_redact(url)} is neither an http(s) URL, a file:// URL nor an absolute path")
        retries = 0
        while True:
            try:
                self._hasher = self._fetch_once(url)
                return
            except _Retry as exc:
                retries += 1
                if retries > RETRIES_PER_SOURCE:
                    keep = (
                        " (the partial file is kept: run again to resume)"
                        if self._lstat(spec.part) is not None
                        else ""
                    )
                    raise SourceError(str(exc) + keep) from None
                self.log(f"retrying {_redact(url)}: {exc}")
                time.sleep(min(0.25 * 2**retries, 4.0))

    def _fetch_once(self, url):
        import http.client
        import socket
        import ssl

        spec = self.spec
        offset = self._part_size()
        # The hash state of the bytes already in the part, kept across retries in this run.
        hasher = self._hasher if self._hasher is not None and self._hasher.length == offset else None
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        try:
            conn, resp, final_url = open_http(url, headers, self._token_for(url), spec.timeout)
        except SourceError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise SourceError(
                f"the TLS certificate of {urlsplit(url).hostname} could not be verified ({exc.verify_message})"
            ) from None
        except (
            socket.gaierror,
            ConnectionRefusedError,
            socket.timeout,
            OSError,
            http.client.HTTPException,
        ) as exc:
            raise SourceError(
                f"could not reach {urlsplit(url).hostname or url} ({_reason(exc)}): add a reachable mirror URL or a local bundle directory holding {spec.name} "
                "to this model's sources"
            ) from None
        try:
            redirected = _origin(final_url) != _origin(url)
            status = resp.status
            if status == 416:
                return self._on_416(resp, url, offset, hasher)
            if status in (401, 403) and redirected:
                # A presigned storage URL that has expired (e.g. while resuming): the original URL hands out
                # a fresh one.
                resp.read(65536)
                raise _Retry(
                    "the redirect target refused access (HTTP %d), asking the original URL again" % status
                )
            if status not in (200, 206):
                raise SourceError(self._http_refusal(url, resp))
            ctype = (resp.getheader("Content-Type") or "").lower()
            if "text/html" in ctype:
                raise SourceError(self._web_page_sentence(url))
            if status == 206:
                start, _end, total = parse_content_range(resp.getheader("Content-Range")) or (
                    None,
                    None,
                    None,
                )
                if start != offset:
                    # The server resumed somewhere else: throw the part away and ask for all of it.
                    resp.close()
                    self._discard_part()
                    raise _Retry("the server answered a resume at byte %d from byte %s" % (offset, start))
                self.result["resumed_from"] = offset
            else:
                if offset:
                    self.log(f"server ignored Range; restarting {spec.name} from byte 0")
                offset = 0
                total = None
                self._discard_part()
                hasher = self._hasher = None
            length = resp.getheader("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if total is None and length is not None:
                total = offset + length
            if total is None and spec.size is not None:
                total = spec.size
            if spec.size is not None and total is not None and total != spec.size:
                raise SourceError(
                    "%s announces %d bytes for %s but the lock pins %d bytes"
                    % (_redact(url), total, spec.name, spec.size)
                )
            self._check_space((total - offset) if total is not None else 0)
            if hasher is None or hasher.length != offset:
                hasher = self._hash_part(offset)
            self._hasher = hasher
            self.progress.begin("downloading", source=url, total=total, offset=offset)
            self._stream(resp, hasher, offset, total, url)
            return hasher
        finally:
            conn.close()

    def _stream(self, resp, hasher, offset, total, url):
        spec = self.spec
        received = offset
        first = offset == 0
        # Receiving, SHA-256 and the disk overlap (sdenv_pipeline); the pipeline is drained before this
        # returns, also on a cut, so the hash state always matches the part for a resume.
        with self._writing_part(keep=True, offset=offset, hasher=hasher) as pipe:
            while True:
                view = pipe.take()
                n, ended, error = _receive(resp, view)
                if n and first:
                    first = False
                    what = describe_non_model(bytes(view[:512])) if spec.is_safetensors else None
                    if what and _is_clearly_not_model(view[:n]):
                        self._discard_part()
                        raise SourceError(self._not_a_model_sentence(url, what))
                if n:
                    pipe.give(n)
                    received += n
                    self.progress.advance(n)
                    self.result["bytes_downloaded"] += n
                if error is not None:
                    raise _Retry(
                        "the download of %s from %s stopped at %d of %s bytes (%s)"
                        % (
                            spec.name,
                            _redact(url),
                            received,
                            total if total is not None else "?",
                            _reason(error),
                        )
                    )
                if ended:
                    break
        if total is not None and received < total:
            raise _Retry(
                "the download of %s from %s stopped at %d of %d bytes (connection closed)"
                % (spec.name, _redact(url), received, total)
            )

    def _on_416(self, resp, resp_url, offset, hasher):
        """Range not satisfiable: the part is complete (verify it) or longer than the file (start over)."""
        spec = self.spec
        resp.read(65536)
        rng = parse_content_range(resp.getheader("Content-Range"))
        total = rng[2] if rng else None
        if total is not None and spec.size is not None and total != spec.size:
            self._discard_part()
            raise SourceError(
                f"{_redact(resp_url)} has {total} bytes of {spec.name} but the lock pins {spec.size} bytes"
                " (a truncated or different file)"
            )
        if offset and (total is None or total == offset) and (spec.size is None or spec.size == offset):
            self.result["resumed_from"] = offset
            return hasher if hasher is not None and hasher.length == offset else self._hash_part(offset)
        self._discard_part()
        raise _Retry(
            "the server could not resume %s at byte %d (HTTP 416); starting over" % (spec.name, offset)
        )

    def _http_refusal(self, url, resp):
        body = resp.read(65536)
        status = resp.status
        ctype = (resp.getheader("Content-Type") or "").lower()
        if status in (401, 403):
            if "html" in ctype or (describe_non_model(body) or "").startswith("a web page"):
                return self._web_page_sentence(url)
            what = describe_non_model(body) or "a refusal"
            return "%s refused %s with HTTP %d (%s): %s" % (
                _redact(url),
                self.spec.name,
                status,
                what,
                self._token_advice(url),
            )
        if status in (404, 410):
            return "%s has no %s (HTTP %d)" % (_redact(url), self.spec.name, status)
        return "%s answered HTTP %d %s for %s" % (_redact(url), status, resp.reason, self.spec.name)

    def _token_for(self, url):
        """The token when `url` is a host allowed for it (never a mirror, a bundle or plain http), else None."""
        return self.spec.token if self.spec.token and token_allowed(url, self.spec.token_hosts) else None

    def _token_advice(self, url):
        spec = self.spec
        if spec.token and not self._token_for(url):
            origin = origin_of(url)
            return (
                "the token in %s is sent only to %s (the hosts sdenv_models_token_hosts allows for it), not to %s"
                % (
                    spec.token_env or "the token",
                    ", ".join(spec.token_hosts) or "no host",
                    show_origin(origin) if origin else _redact(url),
                )
            )
        if spec.token:
            return "the token in %s was refused; check it on civitai.com (Account settings, API keys)" % (
                spec.token_env or "the token"
            )
        if spec.token_env:
            return (
                f"Civitai needs a token in the variable named by token_env ({spec.token_env}), which is empty"
            )
        return "Civitai needs a token: set token_env for this model and export the token in that variable"

    def _web_page_sentence(self, url):
        return f"the server sent a web page, not a model, for {self.spec.name} from {_redact(url)}: {self._token_advice(url)}"

    def _not_a_model_sentence(self, url, what):
        if what.startswith("a web page"):
            return self._web_page_sentence(url)
        if what.startswith("a Git LFS pointer"):
            return f"{_redact(url)} sent {what} instead of {self.spec.name}: use the repository's resolve/ (LFS) URL"
        return f"{_redact(url)} sent {what} instead of {self.spec.name}: {self._token_advice(url)}"

    # -- the .part file --

    def _part_size(self):
        st = self._lstat(self.spec.part)
        if st is None:
            return 0
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{self.spec.part} is not a regular file; remove it and run again", fatal=True)
        return st.st_size

    def _open_part(self, keep):
        """The part, open for writing: its bytes kept (a resume writes after them) or truncated."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (0 if keep else os.O_TRUNC)
        try:
            fd = os.open(os.path.basename(self.spec.part), flags, 0o600, dir_fd=self._dfd())
        except OSError as exc:
            raise SourceError(f"cannot write {self.spec.part} ({exc.strerror or exc})", fatal=True) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SourceError(f"{self.spec.part} is not a regular file; remove it and run again", fatal=True)
        return fd

    def _discard_part(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.basename(self.spec.part), dir_fd=self._dfd())

    def _hash_part(self, offset):
        """Rebuild the hash state of an interrupted download by reading its part once."""
        if offset == 0:
            return StreamHash(addnet=self.spec.addnet_hash and self.spec.is_safetensors)
        self.progress.begin("re-reading partial download", source=self.spec.part, total=offset)
        return hash_file(
            self.spec.part,
            addnet=self.spec.addnet_hash and self.spec.is_safetensors,
            limit=offset,
            progress=self.progress,
            dir_fd=self._dfd(),
        )

    @contextlib.contextmanager
    def _writing_part(self, keep, offset, hasher):
        """A HashWritePipeline into the part (kept from `offset` on, or truncated). On the way out it is
        drained and the part fsynced, also after a cut (the part is kept to resume); a full disk becomes
        one sentence."""
        fd = self._open_part(keep=keep)
        try:
            # No path: the O_DIRECT twin is reopened from the fd itself (/proc), never by a name in the tree.
            pipe = HashWritePipeline(fd, None, offset, hasher)
            try:
                yield pipe
            finally:
                try:
                    pipe.close()
                finally:
                    os.fsync(fd)
        except OSError as exc:
            raise self._write_failed(exc) from None
        finally:
            os.close(fd)

    def _write_failed(self, exc):
        """The exception to raise for a failed write of the part: a full disk is one sentence, and fatal."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return exc
        self._discard_part()
        return SourceError(
            f"the disk holding {os.path.dirname(self.spec.dest)} filled up while writing {self.spec.name}; the partial download was removed: "
            "free some space and run again",
            fatal=True,
        )

    def _check_space(self, needed):
        spec = self.spec
        directory = os.path.dirname(spec.dest)
        try:
            vfs = os.fstatvfs(self._dfd())
        except OSError:
            return
        free = vfs.f_bavail * vfs.f_frsize
        if needed > free:
            raise SourceError(
                "not enough free space in %s for %s: it needs %d MB more and %d MB are free; free some space "
                "and run again" % (directory, spec.name, -(-needed // MB), free // MB),
                fatal=True,
            )

    # -- verification and the rename --

    def _verify_and_install(self, source):
        spec = self.spec
        hasher = self._hasher
        fd = os.open(os.path.basename(spec.part), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dfd())
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if hasher.length != size:
            # The part changed under us (another writer?): never trust a hash of other bytes.
            hasher = hash_file(spec.part, addnet=spec.addnet_hash and spec.is_safetensors, dir_fd=self._dfd())
        if spec.size is not None and size < spec.size:
            raise SourceError(
                "%s from %s is %d bytes, shorter than the pinned %d bytes; the partial file is kept to resume"
                % (spec.name, _redact(source), size, spec.size)
            )
        actual = hasher.hexdigest()
        if spec.size is not None and size != spec.size:
            kept = self._reject()
            raise SourceError(
                "%s from %s is %d bytes, not the pinned %d bytes; %s"
                % (spec.name, _redact(source), size, spec.size, kept)
            )
        if spec.sha256 is not None and actual != spec.sha256:
            kept = self._reject()
            raise SourceError(
                f"{spec.name} from {_redact(source)} has SHA256 {actual} but the lock pins {spec.sha256}; {kept} and nothing "
                "was installed"
            )
        try:
            self._check_structure(spec.part)
        except SourceError as exc:
            kept = self._reject()
            raise SourceError(f"{spec.name} from {_redact(source)} {exc}; {kept}") from None
        self._install(actual, hasher.addnet_hexdigest(), size)

    def _check_structure(self, path):
        try:
            fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dfd())
        except OSError as exc:
            raise SourceError(f"could not be read ({exc})") from None
        with os.fdopen(fd, "rb") as fh:
            self._check_open_structure(fh)

    def _check_open_structure(self, fh):
        spec = self.spec
        if spec.is_safetensors:
            try:
                check_file(fh)
            except SafetensorsError as exc:
                raise SourceError(f"is not a valid safetensors file: {exc}") from None
            except OSError as exc:
                raise SourceError(f"could not be read ({exc})") from None
        else:
            try:
                from ansible.module_utils.pickle_scan import PickleScanError, check_checkpoint
            except ImportError:
                try:  # installed as the Ansible collection sdenv.toolkit
                    from ansible_collections.sdenv.toolkit.plugins.module_utils.pickle_scan import (
                        PickleScanError,
                        check_checkpoint,
                    )
                except ImportError:  # unit tests import the module_utils directories directly
                    from pickle_scan import PickleScanError, check_checkpoint
            try:
                check_checkpoint(fh)
            except PickleScanError as exc:
                raise SourceError(f"was refused: {exc}") from None

    def _reject(self):
        """Move the part out of the model folder into the rejected directory (0700, this run's user's; the
        file 0600), and say where it is; when it cannot be kept there, it is removed and the words say so."""
        spec = self.spec
        try:
            dir_fd = _private_dir(spec.rejected_dir)
        except OSError as exc:
            self._discard_part()
            return f"it was removed, since {spec.rejected_dir} cannot hold it ({exc.strerror or exc})"
        name = os.path.basename(spec.rejected)
        try:
            try:
                os.replace(os.path.basename(spec.part), name, src_dir_fd=self._dfd(), dst_dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # the state directory is on another file system
                _copy_into(self._dfd(), os.path.basename(spec.part), dir_fd, name)
                os.unlink(os.path.basename(spec.part), dir_fd=self._dfd())
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fchown(fd, os.geteuid(), os.getegid())  # a part the dummy had made becomes this run's
                os.fchmod(fd, 0o600)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and exc.filename in (
                spec.part,
                os.path.basename(spec.part),
            ):
                raise  # removed by something else: _from_source says so
            self._discard_part()
            return f"it was removed, since {spec.rejected_dir} cannot hold it ({exc.strerror or exc})"
        finally:
            os.close(dir_fd)
        with contextlib.suppress(OSError):
            fsync_dir_fd(self._dfd())
        return f"it was kept at {spec.rejected} (readable by {_who()} only) for inspection"

    def _install(self, sha256, addnet, size):
        spec = self.spec
        dfd = self._dfd()
        fd = os.open(os.path.basename(spec.part), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            if spec.uid != -1 or spec.gid != -1:
                os.fchown(fd, spec.uid, spec.gid)
            os.fchmod(fd, spec.mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(os.path.basename(spec.part), os.path.basename(spec.dest), src_dir_fd=dfd, dst_dir_fd=dfd)
        fsync_dir_fd(dfd)
        st = self._lstat(spec.dest)
        self.cache.record(spec.dest, st, sha256, addnet_sha256=addnet)
        self.cache.save()
        self.result.update(
            verified_by="download",
            sha256=sha256,
            size=size,
            mtime=st.st_mtime,
            msg="%s installed (%d bytes, SHA256 verified)" % (spec.name, size),
        )
        if addnet:
            self.result["addnet_sha256"] = addnet


def _private_dir(path):
    """A descriptor of directory `path`, made if needed, owned by this process's user, mode 0700 and not a
    symbolic link; OSError otherwise."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise OSError(errno.EPERM, "it belongs to another user")
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_into(src_dir_fd, src_name, dir_fd, name):
    """Copy the file `src_name` in `src_dir_fd` to `name` in `dir_fd` (a temporary name, fsync, rename)."""
    temp = f".{name}.{os.getpid()}.tmp"
    src = os.open(src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir_fd)
    try:
        dst = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            while True:
                block = os.read(src, CHUNK)
                if not block:
                    break
                while block:
                    block = block[os.write(dst, block) :]
            os.fsync(dst)
        finally:
            os.close(dst)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    finally:
        os.close(src)


def _who():
    return "root" if os.geteuid() == 0 else "its owner"


def _receive(resp, view):
    """Receive into `view` until it is full, the body ends or PROGRESS_INTERVAL has passed (a slow link still
    shows progress and keeps what it got). Returns (bytes received, whether the body ended, the error that
    ended it or None); bytes received before a cut are returned, so they are kept for the resume."""
    import http.client
    import socket

    filled = 0
    started = time.monotonic()
    while filled < len(view):
        try:
            n = resp.readinto(view[filled : filled + CHUNK])
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as exc:
            return filled, True, exc
        if not n:
            return filled, True, None
        filled += n
        if time.monotonic() - started >= PROGRESS_INTERVAL:
            break
    return filled, False, None


def _is_clearly_not_model(chunk):
    """True when the first bytes cannot start a safetensors file (their header length is absurd)."""
    if len(chunk) < 8:
        return True
    return struct.unpack("<Q", bytes(chunk[:8]))[0] > 100_000_000


def _local_path(source, filename):
    """The local file a source names (file:// URL, absolute file path, or a bundle directory), else None."""
    if source.startswith("file://"):
        return unquote(urlsplit(source).path)
    if source.startswith("/"):
        if os.path.isdir(source):
            return os.path.join(source, filename)
        return source
    return None


def _reason(exc):
    import socket

    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name not known"
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__ + (f": {exc}" if str(exc) else "")


def install(spec, check_mode=False, download=True, log=None):
    """Convenience entry point: returns the result dict, raises ModelFileError with one sentence."""
    return Installer(spec, check_mode=check_mode, log=log).run(download=download)


def read_progress(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
