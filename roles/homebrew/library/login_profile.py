#!/usr/bin/python
"""Ansible module: a managed block in a login profile whose lines appear exactly once."""

DOCUMENTATION = r"""
module: login_profile
short_description: Keep a managed block of lines in a login profile, each line exactly once
description:
  - Writes the lines between C(# BEGIN sdenv managed block NAME) and C(# END ...) markers, at the end of
    the file the first time. A line the user already wrote outside the block is not repeated inside it.
  - Writes atomically (temp file, fsync, rename) and only when the content changes; creates the file
    with the given owner and mode when missing; reports a diff.
options:
  path: {description: The profile (e.g. C(~dummy/.zprofile))., type: path, required: true}
  name: {description: The block's name in its markers., type: str, required: true}
  lines: {description: The lines the block holds., type: list, elements: str, required: true}
  owner: {description: Owner of a newly created file., type: str}
  group: {description: Group of a newly created file (default the owner's primary group)., type: str}
  mode: {description: Mode of a newly created file., type: raw, default: "0644"}
"""

EXAMPLES = r"""
- name: Homebrew's environment in the dummy's login shell
  login_profile:
    path: /Users/dummy/.zprofile
    name: homebrew
    lines: ['eval "$(/opt/homebrew/bin/brew shellenv)"']
    owner: dummy
"""

RETURN = r"""
left_to_user:
  description: Wanted lines the user had already written outside the block (kept there, not repeated).
  type: list
  returned: success
"""

import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.login_profile_block import ProfileError, render
from ansible.module_utils.sdenv_atomic import write_bytes_atomic


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "lines": {"type": "list", "elements": "str", "required": True},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "mode": {"type": "raw", "default": "0644"},
        },
        supports_check_mode=True,
        add_file_common_args=False,
    )
    p = module.params
    path = p["path"]
    try:
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
        existing = os.stat(path)
    except FileNotFoundError:
        before, existing = "", None
    try:
        after, left_to_user = render(before, p["name"], p["lines"])
    except ProfileError as exc:
        module.fail_json(msg=f"{path}: {exc}")
    changed = after != before
    if changed and not module.check_mode:
        try:
            # An existing profile keeps its mode and owner; a new one gets them just below.
            write_bytes_atomic(
                path,
                after.encode("utf-8"),
                mode=(existing.st_mode & 0o7777) if existing else 0o600,
                uid=existing.st_uid if existing else -1,
                gid=existing.st_gid if existing else -1,
            )
        except OSError as exc:
            module.fail_json(
                msg=f"Cannot write {path} ({exc}): check that its directory exists and is writable."
            )
    if existing is None and not module.check_mode:
        # A new file gets the owner and mode asked for (the dummy's profile, not root's).
        group = p["group"]
        if group is None and p["owner"]:
            group = str(pwd.getpwnam(p["owner"]).pw_gid)  # the owner's primary group (staff on macOS)
        file_args = {"path": path, "owner": p["owner"], "group": group, "mode": p["mode"]}
        changed = module.set_fs_attributes_if_different(module.load_file_common_arguments(file_args), changed)
    module.exit_json(
        changed=changed,
        left_to_user=left_to_user,
        diff={"before": before, "after": after, "before_header": path, "after_header": path},
    )


if __name__ == "__main__":
    main()
