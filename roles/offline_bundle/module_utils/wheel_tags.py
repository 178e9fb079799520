"""Which of a locked package's files installs on a target platform + Python, from any OS (controller only).

The lock pins every file the index offers for a version; a bundle carries the one file a target needs: the
best wheel by the target's tag priority (as an installer there would rank them), else the sdist. The tag
lists match the targets `make lock-venv` resolves for (venv_lock.UV_PLATFORMS): manylinux_2_28 and older on
Linux, macOS 13.0 (Ventura) and older on macOS: some locked packages (opencv-python 4.11) have
macOS arm64 wheels for 13.0 and later only.
"""

from packaging import tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

MACOS_TARGET = (13, 0)
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2")


def platform_tags(platform):
    system, _, machine = platform.partition("-")
    if system == "Linux":
        arch = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[machine]
        oldest = 5 if arch == "x86_64" else 17
        names = [f"manylinux_2_{minor}_{arch}" for minor in range(28, oldest - 1, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        ordered = []
        for name in names:
            ordered.append(name)
            minor = int(name.split("_")[2])
            if minor in legacy:
                ordered.append(f"{legacy[minor]}_{arch}")
        return [*ordered, f"linux_{arch}"]
    if system == "Darwin":
        arch = "arm64" if machine in ("arm64", "aarch64") else "x86_64"
        return list(tags.mac_platforms(MACOS_TARGET, arch))
    raise ValueError(f"unknown platform key {platform!r}")


def target_tags(platform, python):
    """{Tag: priority} for CPython `python` ("3.10") on `platform` (lower is better)."""
    version = tuple(int(part) for part in python.split("."))
    platforms = platform_tags(platform)
    ordered = [
        *tags.cpython_tags(version, platforms=platforms),
        *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms),
    ]
    priority = {}
    for index, tag in enumerate(ordered):
        priority.setdefault(tag, index)
    return priority


def wheel_priority(filename, priority):
    try:
        _, _, _, file_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    ranks = [priority[tag] for tag in file_tags if tag in priority]
    return min(ranks) if ranks else None


def choose_file(files, hashes, priority):
    """The best file of `files` (index entries) whose sha256 the lock pins, for the target; None if none fits.
    Wheels first by tag priority; an sdist only when no wheel fits."""
    allowed = set(hashes)
    best, best_rank = None, None
    sdist = None
    for entry in files:
        if entry["sha256"] not in allowed:
            continue
        name = entry["filename"]
        if name.endswith(".whl"):
            rank = wheel_priority(name, priority)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = entry, rank
        elif name.endswith(SDIST_SUFFIXES) and sdist is None:
            sdist = entry
    return best or sdist


def is_pure_wheel(filename):
    _, _, _, file_tags = parse_wheel_filename(filename)
    return all(tag.abi == "none" and tag.platform == "any" for tag in file_tags)
