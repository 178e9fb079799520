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
      },
      "shared": {"packages_installed_by_toolkit": ["cmake", "rustc"]}
    }

Everything the toolkit makes for a dummy user belongs to that user's entry: each role merges what it made
into `components.<role>`, and lists paths it created outside the user's home in `created_paths` (inside
the home they go with the home). What the toolkit did for every user of the host alike (system packages it
installed) goes into `shared`, which outlives any user's entry: reset-dummy and remove-dummy forget the
user, not what the host still has. Timestamps change only when something else changes, so a second
provision leaves the file byte-identical and reports no change.

The record lives in the state directory, which every target creates the same way (ensure_state_dir).
"""

import copy
import json
import os
import time

try:
    from ansible.module_utils.removal_allowlist import RemovalRefused, check_recordable
    from ansible.module_utils.sdenv_atomic import write_bytes_atomic
except ImportError:  # unit tests import module_utils directly
    from removal_allowlist import RemovalRefused, check_recordable
    from sdenv_atomic import write_bytes_atomic

FORMAT = 1

# The state directory's one mode, whichever target creates it first: root-owned and readable by all (the
# record holds no secret); what must stay root-only inside it (a generated password, the models' stat
# cache) is 0600/0700 itself.
STATE_DIR_MODE = 0o755

# Facts that once sat in a user's entry but describe the whole host: moved to `shared` when read.
LEGACY_SHARED_KEYS = (("homebrew", "packages_installed_by_toolkit"),)


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
    return _move_legacy_shared(record)


def _move_legacy_shared(record):
    """Records written before `shared` existed kept the toolkit's system packages in the user's entry."""
    for entry in record["users"].values():
        for component, key in LEGACY_SHARED_KEYS:
            legacy = ((entry.get("components") or {}).get(component) or {}).pop(key, None)
            if legacy:
                shared = record.setdefault("shared", {})
                shared[key] = sorted(set(shared.get(key) or []) | set(legacy))
    return record


def dumps(record):
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def save(path, record, mode=0o644):
    """Write the record atomically (see sdenv_atomic), creating its directory when needed."""
    ensure_state_dir(os.path.dirname(os.path.abspath(path)))
    write_bytes_atomic(path, dumps(record).encode("utf-8"), mode=mode)


def ensure_state_dir(directory, check_mode=False):
    """Create the state directory (and missing parents) root-owned with STATE_DIR_MODE, or correct it.

    Explicit chmod: os.makedirs' mode is filtered by the umask, so a run under `umask 077` would otherwise
    leave another mode than a run under 022. Returns (changed, mode before or None when it was missing).
    """
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        info = None
    before = None if info is None else info.st_mode & 0o7777
    owner_ok = info is not None and (os.geteuid() != 0 or (info.st_uid, info.st_gid) == (0, 0))
    if info is not None and before == STATE_DIR_MODE and owner_ok:
        return False, before
    if check_mode:
        return True, before
    missing = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for path in reversed(missing):
        os.mkdir(path, STATE_DIR_MODE)
        os.chmod(path, STATE_DIR_MODE)
    os.chmod(directory, STATE_DIR_MODE)
    if os.geteuid() == 0:
        os.chown(directory, 0, 0)
    return True, before


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


def update(
    record, user, data=None, component=None, created_paths=(), remove_paths=(), timestamp=None, shared=None
):
    """Return a new record with the update applied to user's entry (created if missing).

    `data` is merged into the user entry itself, or into `components[component]` when a component is
    named. `created_paths` are added to the user's list (absolute, normal, never a system directory).
    `shared` is merged into the host-wide part, which forgetting a user keeps.
    """
    new = copy.deepcopy(record)
    if shared:
        _merge(new.setdefault("shared", {}), shared)
    entry = new["users"].setdefault(user, {"components": {}, "created_paths": []})
    entry.setdefault("components", {})
    entry.setdefault("created_paths", [])
    if data:
        target = entry["components"].setdefault(component, {}) if component else entry
        _merge(target, data)
    for path in created_paths:
        try:
            check_recordable(path)
        except RemovalRefused as exc:
            raise RecordError(str(exc)) from exc
        if path not in entry["created_paths"]:
            entry["created_paths"].append(path)
    entry["created_paths"] = [p for p in entry["created_paths"] if p not in set(remove_paths)]
    if "created_at" not in entry:
        entry["created_at"] = timestamp or now_utc()
    return new


def summary(record, user, model_sha256s, comfyui=False):
    """What the fleet table shows for a host after a run (sdenv_fleet_table): {webui_commit, comfyui_commit,
    venv_lock, models}, read from the record the roles wrote (a role the fast path skipped left its entry as the
    run that stamped it wrote it). models is "verified/enabled": of the enabled models' sha256 (an empty one is
    a model still pending), how many the record lists as installed and checked; "" when no models run recorded
    any. comfyui: sdenv_apps chooses ComfyUI on this host; when it does not, its commit is "" even if the
    record still has an entry from when it did (the tree is no longer the toolkit's concern there).
    An empty string is what the record does not know (a record from before these fields, or a run of other
    tags)."""
    entry = (record.get("users") or {}).get(user) or {}
    components = entry.get("components") or {}
    webui = components.get("webui") or {}
    comfyui_entry = (components.get("comfyui") or {}) if comfyui else {}
    models = components.get("models")
    verified = set(((models or {}).get("files") or {}).values())
    wanted = list(model_sha256s or [])
    return {
        "webui_commit": str(webui.get("commit") or ""),
        "comfyui_commit": str(comfyui_entry.get("commit") or ""),
        "venv_lock": str((webui.get("venv") or {}).get("lock_sha256") or ""),
        "models": "" if models is None else f"{sum(1 for s in wanted if s and s in verified)}/{len(wanted)}",
    }


def forget_user(record, user):
    """The record without user's entry; `shared` (what the host keeps, e.g. packages) stays."""
    new = copy.deepcopy(record)
    new["users"].pop(user, None)
    return new
