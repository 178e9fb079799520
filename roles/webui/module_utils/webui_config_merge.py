"""Merge the guide's defaults into the WebUI's config.json / ui-config.json, keeping every other key.

The WebUI rewrites both files itself (settings page, "Apply settings", UI defaults), so the toolkit owns
only the keys it sets: anything else the user has is kept as it is, in the order the file has it. A file
that is not a JSON object is never overwritten: the user gets one sentence naming it.
"""

import json

try:
    from ansible.module_utils.webui_files import write_atomic
except ImportError:  # unit tests import the module_utils directories directly
    from webui_files import write_atomic  # noqa: F401


class ConfigMergeError(Exception):
    """A config file that cannot be merged safely."""


def load_json_object(path):
    """The file's object, {} when the file is missing or empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigMergeError(f"The WebUI settings file {path} cannot be read ({exc.strerror}).") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigMergeError(
            f"The WebUI settings file {path} is not valid JSON ({exc}): fix it or move it aside, then run again."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigMergeError(
            f"The WebUI settings file {path} holds a JSON {type(data).__name__}, not an object: fix it or "
            "move it aside, then run again."
        )
    return data


def merge(current, defaults):
    """(new dict, sorted list of keys whose value changed). Keys keep their place; new keys go last."""
    merged = dict(current)
    changed = []
    for key, value in defaults.items():
        if key not in merged or merged[key] != value or type(merged[key]) is not type(value):
            merged[key] = value
            changed.append(key)
    return merged, sorted(changed)


def dumps(data):
    # The WebUI writes both files with indent=4 and ensure_ascii=False; writing the same way keeps a file
    # the WebUI saves next from showing as a whole-file diff.
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
