"""The provision record: what the toolkit created on a host, so that reset-dummy removes only that.

One JSON file per host (root-owned, 0644: it holds no secret). Shape (format 1):

    {
      "format": 1,
      "users": {
        "dummy": {
          "uid": 1001, "home": "/home/dummy", "created_by_toolkit": true,
          "created_at": "2026-11-24T22:00:00Z",
          "components": {"homebrew": {...}, "python": {...}, "webui": {...}},
          "created_paths": ["/opt/homebrew"]
        }
      }
    }

Everything the toolkit makes belongs to one dummy user's entry: each role merges what it made into
`components.<role>`, and lists paths it created outside the user's home in `created_paths` (inside the
home they go with the home). Timestamps change only when something else changes, so a second provision
leaves the file byte-identical and reports no change.
"""

import copy
import json
import os
import time

try:
    from ansible.module_utils.sdenv_atomic import write_bytes_atomic
except ImportError:  # unit tests import module_utils directly
    from sdenv_atomic import write_bytes_atomic

FORMAT = 1

# Directories that are never removed as a whole, whatever a record says: a corrupted or hand-edited
# record must not be able to delete a system tree. /usr/local is Homebrew's prefix on Intel Macs, where
# Homebrew's own directories inside it are listed instead.
PROTECTED_PATHS = frozenset(
    [
        "/", "/Applications", "/Library", "/System", "/Users", "/Volumes", "/bin", "/boot", "/dev",
        "/etc", "/home", "/lib", "/lib64", "/opt", "/private", "/proc", "/root", "/run", "/sbin", "/srv",
        "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/local/bin", "/usr/local/lib",
        "/usr/local/share", "/usr/local/etc", "/usr/local/include", "/usr/local/opt", "/usr/sbin",
        "/usr/share", "/var", "/var/db", "/var/lib", "/var/tmp",
    ]
)  # fmt: skip


class RecordError(Exception):
    """A record that cannot be read or an update that cannot be applied."""


def empty_record():
    return {"format": FORMAT, "users": {}}


def load(path):
    """Read the record at path; a missing file is an empty record."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return empty_record()
    except (OSError, ValueError) as exc:
        raise RecordError(
            f"The provision record {path} cannot be read ({exc}): fix or move it aside, then run again."
        ) from exc
    if (
        not isinstance(record, dict)
        or record.get("format") != FORMAT
        or not isinstance(record.get("users"), dict)
    ):
        raise RecordError(
            f"The provision record {path} is not a format-{FORMAT} record: move it aside, then run again."
        )
    return record


def dumps(record):
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def save(path, record, mode=0o644):
    """Write the record atomically (see sdenv_atomic), creating its directory when needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    write_bytes_atomic(path, dumps(record).encode("utf-8"), mode=mode)


def now_utc():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _merge(target, data):
    """Deep-merge data into target; a None value deletes the key."""
    for key, value in data.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def update(record, user, data=None, component=None, created_paths=(), remove_paths=(), timestamp=None):
    """Return a new record with the update applied to user's entry (created if missing).

    `data` is merged into the user entry itself, or into `components[component]` when a component is
    named. `created_paths` are added to the user's list (absolute, never a protected directory).
    """
    new = copy.deepcopy(record)
    entry = new["users"].setdefault(user, {"components": {}, "created_paths": []})
    entry.setdefault("components", {})
    entry.setdefault("created_paths", [])
    if data:
        target = entry["components"].setdefault(component, {}) if component else entry
        _merge(target, data)
    for path in created_paths:
        check_removable(path)
        if path not in entry["created_paths"]:
            entry["created_paths"].append(path)
    entry["created_paths"] = [p for p in entry["created_paths"] if p not in set(remove_paths)]
    if "created_at" not in entry:
        entry["created_at"] = timestamp or now_utc()
    return new


def forget_user(record, user):
    new = copy.deepcopy(record)
    new["users"].pop(user, None)
    return new


def check_removable(path):
    """Raise RecordError unless path is one a record may name for removal."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise RecordError(f"The path {path!r} in the provision record is not absolute: refusing to use it.")
    normal = os.path.normpath(path)
    if normal != path.rstrip("/") or ".." in path.split("/"):
        raise RecordError(
            f"The path {path!r} in the provision record is not in normal form: refusing to use it."
        )
    if normal in PROTECTED_PATHS or normal.count("/") < 2:
        raise RecordError(f"The path {path} is a system directory: the toolkit never removes it whole.")
    return normal
