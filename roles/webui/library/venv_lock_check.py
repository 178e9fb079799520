#!/usr/bin/python
"""Ansible module: the venv locks of a platform were resolved from today's lock.yml pins (run on the controller)."""

DOCUMENTATION = r"""
module: venv_lock_check
short_description: Check a platform's venv lock files against lock.yml before anything changes
description:
  - Every C(<platform>-py<X.Y>.txt) the toolkit may use on the platform must exist and name, in its header,
    the digest of the inputs lock.yml pins today; otherwise the task fails with one sentence (run make lock-venv).
  - Reads files only; run it on the controller (delegate_to localhost).
options:
  lock: {description: sdenv_lock., type: dict, required: true}
  lock_dir: {description: The directory of the venv lock files (venv-lock next to lock.yml)., type: path, required: true}
  platform: {description: "The host's <system>-<machine>.", type: str, required: true}
"""

EXAMPLES = r"""
- name: Venv locks match lock.yml
  venv_lock_check:
    lock: "{{ sdenv_lock }}"
    lock_dir: inventory/group_vars/all/venv-lock
    platform: Linux-x86_64
"""

RETURN = r"""
files: {description: The lock files checked., type: list, returned: always}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.venv_lock import PYTHONS, LockError, check_lock_text, lock_file_name


def main():
    module = AnsibleModule(
        argument_spec={
            "lock": {"type": "dict", "required": True},
            "lock_dir": {"type": "path", "required": True},
            "platform": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["platform"] not in PYTHONS:
        module.fail_json(msg=f"This host's platform {p['platform']} is not one the toolkit locks a venv for "
                         f"({', '.join(sorted(PYTHONS))}).")  # fmt: skip
    checked = []
    for python in PYTHONS[p["platform"]]:
        name = lock_file_name(p["platform"], python)
        path = os.path.join(p["lock_dir"], name)
        try:
            with open(path, encoding="utf-8") as handle:
                check_lock_text(handle.read(), p["lock"], p["platform"], python, name)
        except OSError:
            module.fail_json(msg=f"There is no venv lock {name} in {p['lock_dir']}: run make lock-venv (it needs "
                             "PyPI) and commit the new files.")  # fmt: skip
        except (LockError, KeyError) as exc:
            module.fail_json(msg=str(exc) if isinstance(exc, LockError) else
                             f"lock.yml lacks {exc} under sdenv_lock.webui_venv: add it, then run make lock-venv.")  # fmt: skip
        checked.append(path)
    module.exit_json(changed=False, files=checked)


if __name__ == "__main__":
    main()
