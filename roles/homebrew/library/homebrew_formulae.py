#!/usr/bin/python
"""Ansible module: the guide's Homebrew formulae, installed as the brew owner, with their versions."""

DOCUMENTATION = r"""
module: homebrew_formulae
short_description: Install missing Homebrew formulae and report the installed versions
description:
  - Runs C(brew list --formula --versions), installs only the formulae that are missing with
    C(brew install --formula), and returns the version of each wanted formula for the provision record.
  - Refuses to run as root (Homebrew does too): run it with C(become_user) set to the prefix's owner.
  - Runs brew with C(HOMEBREW_NO_AUTO_UPDATE), C(HOMEBREW_NO_INSTALL_CLEANUP), C(NONINTERACTIVE) and no analytics.
options:
  brew:
    description: The brew executable (C(<prefix>/bin/brew)).
    type: path
    required: true
  formulae:
    description: Formula names (canonical names as C(brew list) prints them).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The guide's formulae are installed
  homebrew_formulae:
    brew: /opt/homebrew/bin/brew
    formulae: [cmake, protobuf, rust, python@3.10, git, wget]
  become: true
  become_user: dummy
"""

RETURN = r"""
versions:
  description: Installed version of each wanted formula (the newest when several are kept).
  type: dict
  returned: success
installed:
  description: Formulae this call installed (would install, in check mode).
  type: list
  returned: success
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.homebrew_cli import HomebrewError, ensure_formulae


def main():
    module = AnsibleModule(
        argument_spec={
            "brew": {"type": "path", "required": True},
            "formulae": {"type": "list", "elements": "str", "required": True},
        },
        supports_check_mode=True,
    )
    if os.geteuid() == 0:
        module.fail_json(
            msg="homebrew_formulae runs as root, and brew must never: set become_user to the dummy user."
        )

    def run(argv, environ):
        return module.run_command(argv, environ_update=environ)

    try:
        changed, installed, versions = ensure_formulae(
            run, module.params["brew"], module.params["formulae"], module.check_mode
        )
    except HomebrewError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=changed,
        installed=installed,
        versions=versions,
        diff={"before": "", "after": "".join(f"brew install {name}\n" for name in installed)},
    )


if __name__ == "__main__":
    main()
