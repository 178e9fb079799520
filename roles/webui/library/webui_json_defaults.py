#!/usr/bin/python
"""Ansible module: merge default keys into a WebUI JSON settings file, keeping every other key."""

DOCUMENTATION = r"""
module: webui_json_defaults
short_description: Set some keys of a WebUI settings file (config.json, ui-config.json), keep the rest
description:
  - Keys in I(values) get those values; every other key the file has is kept unchanged and in place.
  - Writes atomically (temp file, fsync, rename) and only when a value differs. A file that is not a JSON
    object fails the task with one sentence and is left as it is.
  - Run it as the file's owner (become_user): a new file belongs to that user.
options:
  path: {description: The JSON file., type: path, required: true}
  values: {description: The keys to set., type: dict, required: true}
  mode: {description: Mode of a newly written file., type: str, default: "0644"}
"""

EXAMPLES = r"""
- name: The guide's sampler in ui-config.json
  webui_json_defaults:
    path: /home/dummy/stable-diffusion-webui/ui-config.json
    values: {"customscript/sampler.py/txt2img/Sampling method/value": "DPM++ SDE"}
"""

RETURN = r"""
changed_keys: {description: Keys whose value was set or changed., type: list, returned: always}
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.webui_config_merge import (
    ConfigMergeError,
    dumps,
    load_json_object,
    merge,
    write_atomic,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "values": {"type": "dict", "required": True},
            "mode": {"type": "str", "default": "0644"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        current = load_json_object(p["path"])
        merged, changed_keys = merge(current, p["values"])
        if changed_keys and not module.check_mode:
            write_atomic(p["path"], dumps(merged).encode("utf-8"), int(p["mode"], 8))
    except (ConfigMergeError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=bool(changed_keys),
        changed_keys=changed_keys,
        diff={
            "before": json.dumps({k: current.get(k) for k in changed_keys}, indent=2, sort_keys=True) + "\n",
            "after": json.dumps({k: merged[k] for k in changed_keys}, indent=2, sort_keys=True) + "\n",
            "before_header": p["path"],
            "after_header": p["path"],
        },
    )


if __name__ == "__main__":
    main()
