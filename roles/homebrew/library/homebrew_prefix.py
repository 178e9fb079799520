#!/usr/bin/python
"""Ansible module: the directories of a Homebrew prefix, owned by the brew user (run as root)."""

DOCUMENTATION = r"""
module: homebrew_prefix
short_description: Create a Homebrew prefix's directories for its owner and say which paths the toolkit created
description:
  - >-
    The clone-the-brew-repository route of the geerlingguy.mac collection, with root doing only this
    part - create the prefix (C(/opt/homebrew) on Apple Silicon) or Homebrew's directories in
    C(/usr/local) (Intel), owned by the brew user and group-writable by C(admin). brew itself then runs
    as that user.
  - >-
    Returns the paths C(make reset-dummy) may remove: the whole prefix on Apple Silicon; on Intel only
    Homebrew's own entries that did not exist before (never C(/usr/local) or a directory it shares).
options:
  prefix: {description: The Homebrew prefix., type: path, required: true}
  owner: {description: The brew user (the dummy)., type: str, required: true}
  group: {description: Group of the directories., type: str, default: admin}
  before_clone:
    description:
      - Make only what must exist before brew is cloned. On Apple Silicon the prefix is the repository and
        git clones only into an empty directory, so this makes the prefix alone; run the module again after
        the clone for the rest.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Homebrew's prefix exists for the dummy
  homebrew_prefix:
    prefix: /opt/homebrew
    owner: dummy
"""

RETURN = r"""
created_paths: {description: Paths the toolkit is creating, for the provision record., type: list, returned: success}
directories: {description: The directories made or corrected., type: list, returned: success}
"""

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.homebrew_cli import (
    INTEL_OWN_PATHS,
    INTEL_PREFIX,
    created_paths_for,
    prefix_directories,
)
from ansible.module_utils.sdenv_atomic import LinkRefused, own_dir_nofollow


def main():
    module = AnsibleModule(
        argument_spec={
            "prefix": {"type": "path", "required": True},
            "owner": {"type": "str", "required": True},
            "group": {"type": "str", "default": "admin"},
            "before_clone": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    prefix = p["prefix"].rstrip("/")
    try:
        uid = pwd.getpwnam(p["owner"]).pw_uid
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(
            msg=f"The user {p['owner']} or group {p['group']} does not exist ({exc}): create it first."
        )
    existing = set()
    if prefix == INTEL_PREFIX:
        existing = {
            os.path.join(prefix, n) for n in INTEL_OWN_PATHS if os.path.lexists(os.path.join(prefix, n))
        }
    created = created_paths_for(prefix, existing)
    touched = []
    for directory in prefix_directories(prefix, before_clone=p["before_clone"]):
        # Group-writable for admin, as Homebrew's own installer leaves its directories. Through descriptors,
        # never a chown by name: the dummy owns the prefix and could put a link to /etc at any of these names.
        try:
            if own_dir_nofollow(directory, uid, gid, 0o775, check_mode=module.check_mode):
                touched.append(directory)
        except LinkRefused as exc:
            module.fail_json(msg=f"{exc}.", directories=touched)
    module.exit_json(
        changed=bool(touched),
        created_paths=created,
        directories=touched,
        diff={"before": "", "after": "".join(f"{d} owned by {p['owner']}:{p['group']}\n" for d in touched)},
    )


if __name__ == "__main__":
    main()
