#!/usr/bin/python
"""Ansible module: read or update the host's provision record."""

DOCUMENTATION = r"""
module: provision_record
short_description: Read or update the record of what the toolkit created on this host
description:
  - Keeps one JSON file per host naming, per dummy user, what the toolkit created (the account, a Homebrew
    prefix, the WebUI tree, ...). C(make reset-dummy) removes only what this record names.
  - Writes atomically and only when the content changes, so a second provision reports no change.
  - A path given in I(created_paths) must be one C(make reset-dummy) may delete for the user (its home, its
    WebUI tree, the Homebrew prefix the toolkit installed, its entries in the state directory), so a role
    never records what no reset could act on.
  - C(directory) only makes sure the state directory (the record's directory) exists, root-owned with the
    one mode every target gives it.
options:
  path:
    description: The record file.
    type: path
    required: true
  user:
    description: The dummy user whose entry is read or updated (not used by C(directory)).
    type: str
  state:
    description: C(present) merges I(data), I(created_paths) and I(shared); C(absent) forgets the user's entry
      (the host-wide C(shared) part stays); C(query) only reads; C(directory) ensures the state directory.
    type: str
    choices: [present, absent, query, directory]
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
  shared:
    description: Keys to merge into the host-wide part (what every user of the host shares, such as the
      system packages the toolkit installed); forgetting a user keeps it.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Record the Homebrew prefix the toolkit installed
  provision_record:
    path: /var/db/sdenv/state.json
    user: dummy
    component: homebrew
    data: {prefix: /opt/homebrew, installed_by_toolkit: true}
    created_paths: [/opt/homebrew]

- name: Remember, for the whole host, which system packages the toolkit installed
  provision_record:
    path: /var/lib/sdenv/state.json
    user: dummy
    shared: {packages_installed_by_toolkit: [cmake, rustc]}

- name: The state directory exists, root-owned, mode 0755
  provision_record:
    path: /var/lib/sdenv/state.json
    state: directory
"""

RETURN = r"""
record:
  description: The whole record after the call.
  type: dict
  returned: always
entry:
  description: The user's entry after the call (empty when absent).
  type: dict
  returned: state is not directory
"""

import os
import platform

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.provision_record import (
    STATE_DIR_MODE,
    RecordError,
    dumps,
    ensure_state_dir,
    forget_user,
    load,
    save,
    update,
)
from ansible.module_utils.removal_allowlist import HOME_ROOTS, allowlist_for


def check_created_paths(p, after):
    """Every newly recorded path must be one reset-dummy may delete for the user."""
    entry = after["users"].get(p["user"], {})
    allowlist = allowlist_for(
        p["user"],
        entry,
        entry.get("home"),
        HOME_ROOTS.get(platform.system(), ()),
        os.path.dirname(os.path.abspath(p["path"])),
    )
    for path in p["created_paths"]:
        reason = allowlist.refusal(path)
        if reason:
            raise RecordError(
                f"Cannot record {path} as made for {p['user']}: reset-dummy could never delete it ({reason})."
            )


def ensure_directory(module):
    directory = os.path.dirname(os.path.abspath(module.params["path"]))
    changed, before = ensure_state_dir(directory, module.check_mode)
    module.exit_json(
        changed=changed,
        path=directory,
        diff={
            "before": "absent\n" if before is None else f"mode {before:04o}\n",
            "after": f"mode {STATE_DIR_MODE:04o}, owner root\n",
            "before_header": directory,
            "after_header": directory,
        },
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "user": {"type": "str"},
            "state": {
                "type": "str",
                "choices": ["present", "absent", "query", "directory"],
                "default": "present",
            },
            "component": {"type": "str"},
            "data": {"type": "dict", "default": {}},
            "created_paths": {"type": "list", "elements": "path", "default": []},
            "remove_paths": {"type": "list", "elements": "path", "default": []},
            "shared": {"type": "dict", "default": {}},
        },
        required_if=[("state", s, ["user"]) for s in ("present", "absent", "query")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["state"] == "directory":
            ensure_directory(module)
        before = load(p["path"])
        if p["state"] == "query":
            after = before
        elif p["state"] == "absent":
            after = forget_user(before, p["user"])
        else:
            after = update(
                before,
                p["user"],
                p["data"],
                p["component"],
                p["created_paths"],
                p["remove_paths"],
                shared=p["shared"],
            )
            check_created_paths(p, after)
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
