"""uv on a host: the binary from the lock's pinned wheel, in the toolkit's tools directory.

The wheel (PyPI's, or the bundle's copy) is checked by the sha256 lock.yml pins for the platform, and only
its `uv` executable is kept: `<tools>/uv-<version>/uv`, root-owned 0755 so the dummy user can run it. A
marker written last records the wheel's sha256 and the binary's size and mtime: while they hold, nothing
is read or fetched again.
"""

import json
import os
import tempfile
import zipfile

try:
    from ansible.module_utils.package_index import PackageIndexError, copy_verified, fetch, list_files
except ImportError:  # unit tests import module_utils directly
    from package_index import PackageIndexError, copy_verified, fetch, list_files

MARKER = ".sdenv-uv.json"


class UvInstallError(Exception):
    """A uv that cannot be installed, named in one sentence."""


def binary_path(tools_dir, version):
    return os.path.join(tools_dir, f"uv-{version}", "uv")


def is_current(tools_dir, version, wheel_sha256):
    path = binary_path(tools_dir, version)
    try:
        with open(os.path.join(os.path.dirname(path), MARKER), encoding="utf-8") as handle:
            marker = json.load(handle)
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return marker == {"wheel_sha256": wheel_sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract_binary(wheel_path, version, dest):
    member = f"uv-{version}.data/scripts/uv"
    try:
        with zipfile.ZipFile(wheel_path) as wheel, wheel.open(member) as source:
            directory = os.path.dirname(dest)
            fd, tmp = tempfile.mkstemp(prefix=".sdenv-uv-", dir=directory)
            with os.fdopen(fd, "wb") as out:
                for block in iter(lambda: source.read(1 << 20), b""):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
    except (KeyError, zipfile.BadZipFile) as exc:
        raise UvInstallError(
            f"{wheel_path} is not uv {version}'s wheel (no {member}): fix sdenv_lock.uv."
        ) from exc
    os.chmod(tmp, 0o755)  # noqa: S103 - an executable every user runs (the dummy's venv bootstrap)
    os.replace(tmp, dest)


def install(tools_dir, version, wheel, local_dir="", index_url=""):
    """Install uv; returns the binary's path. wheel: {file, sha256} for this platform."""
    dest = binary_path(tools_dir, version)
    directory = os.path.dirname(dest)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sdenv-uv-", dir=directory) as tmp:
        local = os.path.join(tmp, wheel["file"])
        try:
            if local_dir:
                copy_verified(os.path.join(local_dir, wheel["file"]), local, wheel["sha256"])
            else:
                listed = {f["filename"]: f for f in list_files(index_url, "uv")}
                if wheel["file"] not in listed:
                    raise UvInstallError(f"The package index has no {wheel['file']}: check sdenv_lock.uv.")
                fetch(listed[wheel["file"]]["url"], local, wheel["sha256"])
        except (PackageIndexError, OSError) as exc:
            raise UvInstallError(str(exc)) from exc
        extract_binary(local, version, dest)
    st = os.stat(dest)
    marker = {"wheel_sha256": wheel["sha256"], "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(marker, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, MARKER))
    return dest
