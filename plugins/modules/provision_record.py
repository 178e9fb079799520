#!/usr/bin/python
"""Ansible module: read or update the host's provision record."""

DOCUMENTATION = r"""
module: provision_record
short_description: Read or update the record of what the toolkit created on this host
description:
  - Keeps one JSON file per host naming, per dummy user, what the toolkit created (the account, a Homebrew
    prefix, the WebUI tree, ...). C(make reset-dummy) removes only what this record names.
  - Writes atomically and only when the content changes, so a second provision reports no change.
options:
  path:
    description: The record file.
    type: path
    required: true
  user:
    description: The dummy user whose entry is read or updated.
    type: str
    required: true
  state:
    description: C(present) merges I(data) and I(created_paths); C(absent) forgets the user's entry;
      C(query) only reads.
    type: str
    choices: [present, absent, query]
    default: present
  component:
    description: Merge I(data) into C(components.<component>) instead of the user entry itself.
    type: str
  data:
    description: Keys to merge; a null value removes a key.
    type: dict
    default: {}
  created_paths:
    description: Paths outside the user's home that the toolkit created for this user.
    type: list
    elements: path
    default: []
  remove_paths:
    description: Paths to drop from the user's created_paths (after they were removed).
    type: list
    elements: path
    default: []
"""

EXAMPLES = r"""
- name: Record the Homebrew prefix the toolkit installed
  provision_record:
    path: /var/db/sdenv/state.json
    user: dummy
    component: homebrew
    data: {prefix: /opt/homebrew, installed_by_toolkit: true}
    created_paths: [/opt/homebrew]
"""

RETURN = r"""
record:
  description: The whole record after the call.
  type: dict
  returned: always
entry:
  description: The user's entry after the call (empty when absent).
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.provision_record import (
    RecordError,
    dumps,
    forget_user,
    load,
    save,
    update,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent", "query"], "default": "present"},
            "component": {"type": "str"},
            "data": {"type": "dict", "default": {}},
            "created_paths": {"type": "list", "elements": "path", "default": []},
            "remove_paths": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        before = load(p["path"])
        if p["state"] == "query":
            after = before
        elif p["state"] == "absent":
            after = forget_user(before, p["user"])
        else:
            after = update(
                before, p["user"], p["data"], p["component"], p["created_paths"], p["remove_paths"]
            )
        changed = dumps(before) != dumps(after)
        if changed and not module.check_mode:
            save(p["path"], after)
    except (RecordError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=changed,
        record=after,
        entry=after["users"].get(p["user"], {}),
        diff={
            "before": dumps(before),
            "after": dumps(after),
            "before_header": p["path"],
            "after_header": p["path"],
        },
    )


if __name__ == "__main__":
    main()
