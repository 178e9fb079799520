#!/usr/bin/python
"""Ansible module (on a host, as root): what the host's copy of the fleet cache lacks, and sealing it."""

DOCUMENTATION = r"""
module: bundle_cache_host
short_description: Plan or seal a host's copy of the controller's fleet cache
description:
  - C(state=plan) makes the copy's directory (root's, 0755, since the dummy reads from it), skips every file whose
    size and stat match the record of the last run (others with the right size are hashed), removes wrong
    files and files the controller's list does not name, and returns the files to copy.
  - C(state=unpack) puts the files of a tar the controller packed in place, each only with its listed sha256.
  - C(state=seal) hashes the files just copied against the controller's list and records every file's stat.
  - Logic in module_utils/bundle_cache.py.
options:
  directory: {description: The copy on this host., type: path, required: true}
  files: {description: "[{path, sha256, size}] the controller's cache holds.", type: list, elements: dict,
    required: true}
  copied: {description: Paths copied in this run (state=seal)., type: list, elements: str, default: []}
  archive: {description: The tar to unpack (state=unpack); removed afterwards., type: path}
  state: {description: plan, unpack or seal., type: str, choices: [plan, unpack, seal], default: plan}
"""

EXAMPLES = r"""
- name: What this host lacks
  bundle_cache_host:
    directory: /var/cache/sdenv/fleet
    files: "{{ listing }}"
  register: plan
"""

RETURN = r"""
need: {description: Paths to copy from the controller (state=plan)., type: list, returned: state=plan}
need_small: {description: The small ones of need, packed into one tar., type: list, returned: state=plan}
need_large: {description: The large ones of need, copied one by one., type: list, returned: state=plan}
have: {description: Files already there with the right bytes (state=plan)., type: int, returned: state=plan}
removed: {description: Wrong or unlisted files removed (state=plan)., type: list, returned: state=plan}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bundle_cache import check_host_dir, plan_host, seal_host, split_need, unpack
from ansible.module_utils.bundle_layout import BundleError


def main():
    module = AnsibleModule(
        argument_spec={
            "directory": {"type": "path", "required": True},
            "files": {"type": "list", "elements": "dict", "required": True},
            "copied": {"type": "list", "elements": "str", "default": []},
            "archive": {"type": "path"},
            "state": {"type": "str", "choices": ["plan", "unpack", "seal"], "default": "plan"},
        },
        supports_check_mode=True,
    )
    p = module.params
    directory = p["directory"]
    try:
        if p["state"] == "plan":
            made = not os.path.lexists(directory)
            if module.check_mode:
                need = [e["path"] for e in p["files"]]
                small, large = split_need(p["files"], need)
                module.exit_json(
                    changed=made, need=need, need_small=small, need_large=large, have=0, removed=[]
                )
            os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
            if made:
                os.mkdir(directory, 0o755)
                os.chmod(directory, 0o755)  # noqa: S103 - whatever the umask: the dummy reads the bundle from here
            check_host_dir(directory)
            found = plan_host(directory, p["files"])
            small, large = split_need(p["files"], found["need"])
            module.exit_json(
                changed=made or bool(found["removed"]), need_small=small, need_large=large, **found
            )
        if module.check_mode:
            module.exit_json(changed=False)
        if p["state"] == "unpack":
            placed = unpack(directory, p["archive"], p["files"])
            module.exit_json(changed=True, placed=len(placed))
        count = seal_host(directory, p["files"], p["copied"])
        module.exit_json(changed=False, files=count)
    except (BundleError, OSError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
