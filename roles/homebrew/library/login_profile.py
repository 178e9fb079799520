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

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.login_profile_block import ProfileError, render
from ansible.module_utils.sdenv_atomic import LinkRefused, open_nofollow, write_bytes_atomic


def owner_and_mode(module, existing):
    """(mode, uid, gid) to write with: an existing profile keeps its own; a new one gets the owner and mode
    asked for (the dummy's profile, not root's), the owner's primary group unless a group is given."""
    if existing is not None:
        return existing.st_mode & 0o7777, existing.st_uid, existing.st_gid
    p = module.params
    mode = int(p["mode"], 8) if isinstance(p["mode"], str) else p["mode"]
    uid = gid = -1
    try:
        if p["owner"]:
            account = pwd.getpwnam(p["owner"])
            uid, gid = account.pw_uid, account.pw_gid  # the owner's primary group (staff on macOS)
        if p["group"]:
            gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(msg=f"Cannot give {p['path']} its owner: {exc.args[0]}.")
    return mode, uid, gid


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
    # Root edits a file in the dummy's home: read it and replace it with no link followed (sdenv_atomic).
    try:
        fd = open_nofollow(path)
    except FileNotFoundError:
        before, existing = "", None
    except OSError as exc:
        module.fail_json(msg=f"Cannot read {path}: {exc}." if not isinstance(exc, LinkRefused) else f"{exc}.")
    else:
        with os.fdopen(fd, "rb") as handle:
            existing = os.fstat(handle.fileno())
            before = handle.read().decode("utf-8")
    try:
        after, left_to_user = render(before, p["name"], p["lines"])
    except ProfileError as exc:
        module.fail_json(msg=f"{path}: {exc}")
    changed = after != before
    if changed and not module.check_mode:
        # Resolved only when writing: a dry run before the first provision has no account to look up yet.
        mode, uid, gid = owner_and_mode(module, existing)
        try:
            write_bytes_atomic(path, after.encode("utf-8"), mode=mode, uid=uid, gid=gid)
        except LinkRefused as exc:
            module.fail_json(msg=f"{exc}.")
        except OSError as exc:
            module.fail_json(
                msg=f"Cannot write {path} ({exc}): check that its directory exists and is writable."
            )
    module.exit_json(
        changed=changed,
        left_to_user=left_to_user,
        diff={"before": before, "after": after, "before_header": path, "after_header": path},
    )


if __name__ == "__main__":
    main()
