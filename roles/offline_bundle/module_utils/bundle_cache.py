"""The fleet cache: a bundle the controller keeps and refreshes as it provisions, and the copies hosts take of it.

Why a bundle: `make bundle` already fetches exactly what a provision fetches (git objects, archives, wheels, uv,
models), once, into one directory whose SHA256SUMS names every file, and `make provision BUNDLE=dir` already
provisions a host from such a directory with no network. The fleet cache keeps one on the controller and copies
to each host only the files it lacks, over the host's own connection (local or SSH alike).

On-disk invariants (both sides write a record beside the bundle's files, named `.sdenv-fleet-*.json` so the
bundle's own SHA256SUMS never lists it):
- Controller: a file is served only when its sha256 is the one SHA256SUMS names. The record keeps, per file,
  the (size, mtime, ctime, inode) at which it last hashed right; a file whose stat still matches is trusted
  (ctime cannot be set back from user space, so any write to the file changes it), any other is hashed again,
  and one that no longer matches is removed with SHA256SUMS, so the builder fetches it again from upstream.
- Host: the same record for the host's copy; a file with the right size whose stat matches is skipped, one
  with the right size and another stat is hashed, a wrong one is removed and copied again. Files not in the
  list are removed (never following a link), so the copy is exactly the controller's bundle.
Plain Python: the modules (library/bundle_cache_*.py) and the unit tests import it.
"""

import functools
import json
import os
import stat
import tempfile

try:
    from ansible.module_utils.bundle_layout import SUMS, BundleError, read_sums
    from ansible.module_utils.webui_files import sha256_file
except ImportError:  # the controller's tools and unit tests import module_utils directly
    from bundle_layout import SUMS, BundleError, read_sums
    from webui_files import sha256_file

RECORD = ".sdenv-fleet-record.json"


def stat_key(st):
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def read_record(directory):
    try:
        with open(os.path.join(directory, RECORD), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {"spec": None, "files": {}}
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return {"spec": None, "files": {}}
    return record


def write_record(directory, record):
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-fleet-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, os.path.join(directory, RECORD))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def safe_relative(relative):
    """A path SHA256SUMS may name: relative, no '..', no empty part (a bundle never names anything else)."""
    parts = relative.split("/")
    return bool(relative) and not relative.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _still_good(path, digest, known, deep, hasher):
    """(good, stat key or None, hashed): the file at path has sha256 digest, trusting known's stat when it
    matches (and not deep). A link or anything but a regular file is never good."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False, None, False
    if not stat.S_ISREG(st.st_mode):
        return False, None, False
    key = stat_key(st)
    if not deep and known == [*key, digest]:
        return True, key, False
    return hasher(path) == digest, key, True


def _remove(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise BundleError(f"{path} is a directory where the cache expects a file: remove it by hand.")
    os.unlink(path)


def check_controller(bundle, spec_digest, deep=False, hasher=sha256_file):
    """Can the controller's cached bundle serve this run as it is?

    Returns {"complete", "removed", "hashed"}: complete when SHA256SUMS is there, was sealed for this very
    spec, and every file it names still has its sha256 (checked as the module docstring says). A file that
    does not is removed, and SHA256SUMS with it: the bundle is then unfinished, and the builder fetches what
    is missing from upstream (it reuses every file that still verifies). Nothing bad is ever left to serve."""
    if not os.path.isfile(os.path.join(bundle, SUMS)):
        return {"complete": False, "removed": [], "hashed": 0}
    try:
        sums = read_sums(bundle)
    except BundleError:
        os.unlink(os.path.join(bundle, SUMS))
        return {"complete": False, "removed": [SUMS], "hashed": 0}
    record = read_record(bundle)
    files, removed, hashed = {}, [], 0
    for relative, digest in sorted(sums.items()):
        if not safe_relative(relative):
            raise BundleError(
                f"{bundle}/{SUMS} names {relative!r}, which is not a path inside it: remove {bundle}."
            )
        path = os.path.join(bundle, relative)
        good, key, did_hash = _still_good(path, digest, record["files"].get(relative), deep, hasher)
        hashed += did_hash
        if good:
            files[relative] = [*key, digest]
        else:
            _remove(path)
            removed.append(relative)
    if removed:
        os.unlink(os.path.join(bundle, SUMS))
    write_record(bundle, {"spec": record.get("spec") if not removed else None, "files": files})
    complete = not removed and record.get("spec") == spec_digest
    return {"complete": complete, "removed": removed, "hashed": hashed}


def seal_controller(bundle, spec_digest, hasher=sha256_file):
    """After the builder wrote SHA256SUMS (hashing what it wrote): record each file's stat and the spec, and
    return the list hosts copy: [{"path", "sha256", "size"}], SHA256SUMS itself last."""
    sums = read_sums(bundle)
    record = read_record(bundle)
    files, listing = {}, []
    for relative, digest in sorted(sums.items()):
        st = os.lstat(os.path.join(bundle, relative))
        files[relative] = [*stat_key(st), digest]
        listing.append({"path": relative, "sha256": digest, "size": st.st_size})
    if record.get("spec") == spec_digest and record["files"] == files:
        pass  # nothing changed since the last seal: keep the record as it is
    else:
        write_record(bundle, {"spec": spec_digest, "files": files})
    sums_path = os.path.join(bundle, SUMS)
    listing.append({"path": SUMS, "sha256": hasher(sums_path), "size": os.path.getsize(sums_path)})
    return listing


# --- the host's copy ----------------------------------------------------------------------------------------


def check_host_dir(directory):
    """The host's copy lives in a directory root owns and no one else can write: root copies files into it
    and the dummy's provision reads from it, so nobody else may swap a file or a link in."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise BundleError(
            f"{directory} is not a directory (a link or a file): set sdenv_fleet_cache_host_dir to a new path."
        )
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise BundleError(
            f"{directory} is not root's alone (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): "
            "set sdenv_fleet_cache_host_dir to a directory only root can write."
        )


def plan_host(directory, listing, deep=False, hasher=sha256_file):
    """What the host lacks of listing ([{"path", "sha256", "size"}]).

    Returns {"need": [path], "have": n, "removed": [path], "hashed": n}; removes wrong files and files the
    listing does not name, and makes the directories the needed files go into (0755)."""
    record = read_record(directory)
    wanted = {}
    for entry in listing:
        if not safe_relative(entry["path"]):
            raise BundleError(
                f"The cache list names {entry['path']!r}, which is not a relative path: nothing was copied."
            )
        wanted[entry["path"]] = entry
    need, have, removed, hashed, files = [], 0, [], 0, {}
    for relative, entry in sorted(wanted.items()):
        path = os.path.join(directory, relative)
        _no_links_between(directory, relative)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            size = None
        good = False
        if size == entry["size"]:
            good, key, did_hash = _still_good(
                path, entry["sha256"], record["files"].get(relative), deep, hasher
            )
            hashed += did_hash
        if good:
            have += 1
            files[relative] = [*key, entry["sha256"]]
            continue
        if size is not None or os.path.islink(path):
            _remove(path)
            removed.append(relative)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        need.append(relative)
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), directory)
            if relative not in wanted and relative != RECORD:
                os.unlink(os.path.join(dirpath, name))
                removed.append(relative)
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):  # os.walk does not descend; a link is never ours
                os.unlink(os.path.join(dirpath, name))
                removed.append(os.path.relpath(os.path.join(dirpath, name), directory))
                dirnames.remove(name)
    write_record(directory, {"spec": None, "files": files})
    return {"need": need, "have": have, "removed": sorted(removed), "hashed": hashed}


def _no_links_between(directory, relative):
    """Remove any link among a path's parent directories inside the copy (root writes there and must never
    write through one: a link is never the cache's, so the directory is made again in its place)."""
    current = directory
    for part in relative.split("/")[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            os.unlink(current)


def seal_host(directory, listing, copied, hasher=sha256_file):
    """After the copies: hash each copied file once (the host holds the bytes the list names, or this says
    which it does not) and record every file's stat, so the next run skips them without reading them."""
    record = read_record(directory)
    copied = set(copied)
    files = {}
    for entry in listing:
        relative = entry["path"]
        path = os.path.join(directory, relative)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path} is not a regular file after the copy: run make provision again.")
        unchecked = relative in copied or record["files"].get(relative) != [*stat_key(st), entry["sha256"]]
        if unchecked and hasher(path) != entry["sha256"]:
            os.unlink(path)
            raise BundleError(
                f"{path} arrived with another sha256 than the controller's cache names: run make provision again."
            )
        files[relative] = [*stat_key(st), entry["sha256"]]
    write_record(directory, {"spec": None, "files": files})
    return len(files)


# --- small files travel together ------------------------------------------------------------------------
# One copy task per file costs a round trip or more each (seconds on a loaded machine, more over SSH), and a
# bundle is mostly small files (git internals, pure-Python wheels): those go in one tar per host and run, the
# large ones (models, big wheels) one by one, so no byte is written twice on the controller.
SMALL = 1 << 20


def split_need(listing, need, small=SMALL):
    """(small paths, large paths) of need, by the listing's sizes."""
    sizes = {entry["path"]: entry["size"] for entry in listing}
    return [p for p in need if sizes[p] < small], [p for p in need if sizes[p] >= small]


def pack(bundle, paths, dest):
    """Write dest, a tar of bundle's paths (regular files only, as they are now), atomically."""
    import tarfile

    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-fleet-", suffix=".tar", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
            for relative in paths:
                if not safe_relative(relative):
                    raise BundleError(f"{relative!r} is not a path inside the cache: nothing was packed.")
                tar.add(os.path.join(bundle, relative), arcname=relative, recursive=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def unpack(directory, archive, listing):
    """Put each member of archive that the listing names at its place in directory, only when its bytes have
    the listing's sha256 (temp file, then rename: never a half-written file). Removes archive. Returns the
    paths put in place; a member the listing does not name, or anything but a regular file, is refused."""
    import hashlib
    import tarfile

    wanted = {entry["path"]: entry["sha256"] for entry in listing}
    placed = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                if member.name not in wanted or not member.isreg():
                    raise BundleError(
                        f"{archive} holds {member.name!r}, which the cache list does not name as a file."
                    )
                path = os.path.join(directory, member.name)
                _no_links_between(directory, member.name)
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                source = tar.extractfile(member)
                fd, tmp = tempfile.mkstemp(prefix=".sdenv-fleet-", dir=os.path.dirname(path))
                try:
                    digest = hashlib.sha256()
                    with os.fdopen(fd, "wb") as out:
                        for block in iter(functools.partial(source.read, 1 << 20), b""):
                            digest.update(block)
                            out.write(block)
                        out.flush()
                        os.fsync(out.fileno())
                    if digest.hexdigest() != wanted[member.name]:
                        raise BundleError(
                            f"{member.name} arrived with another sha256 than the controller's cache names: "
                            "run make provision again."
                        )
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                placed.append(member.name)
    finally:
        os.unlink(archive)
    return placed


def prune_controller(cache_dir):
    """make fleet-cache-prune: remove from the controller's cache what no lock names any more.

    In each platform's bundle (a directory of cache_dir with a SHA256SUMS), every file its SHA256SUMS does not
    list: what an older lock, model list or platform pin left (the builder adds what a new lock needs and never
    takes away). A bundle without SHA256SUMS (a fill that stopped half-way) is left whole: the next fill uses
    what it has. Also what a run left in outgoing/ (the archives hosts take, removed once taken). The sources/
    cache (git mirrors, archives), which later fills fetch into incrementally, is kept. No link is followed: a
    link is removed as itself. The caller holds the cache's lock. Returns (removed relative paths, bytes)."""
    removed, freed = [], 0

    def drop(path):
        nonlocal freed
        st = os.lstat(path)
        freed += st.st_size if stat.S_ISREG(st.st_mode) else 0
        os.unlink(path)
        removed.append(os.path.relpath(path, cache_dir))

    for entry in sorted(os.scandir(cache_dir), key=lambda e: e.name):
        if entry.name == "outgoing" and entry.is_dir(follow_symlinks=False):
            for leftover in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if not leftover.is_dir(follow_symlinks=False):
                    drop(leftover.path)
            continue
        if entry.name == "sources" or not entry.is_dir(follow_symlinks=False):
            continue
        if not os.path.isfile(os.path.join(entry.path, SUMS)):
            continue
        wanted = set(read_sums(entry.path)) | {SUMS, RECORD}
        for dirpath, dirnames, filenames in os.walk(entry.path, topdown=False):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.path.relpath(path, entry.path) not in wanted:
                    drop(path)
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):  # os.walk does not descend into it; a link is never the cache's
                    drop(path)
                elif not os.listdir(path):
                    os.rmdir(path)
    return removed, freed
