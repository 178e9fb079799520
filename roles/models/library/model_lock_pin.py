#!/usr/bin/python
# Thin Ansible wrapper: the logic is in module_utils/model_lock_edit.py (unit-tested without Ansible).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_lock_pin
short_description: Record a model's SHA256 and size in lock.yml, keeping the file's comments and layout
description:
  - Edits only the C(sha256) and C(size) lines of one C(sdenv_lock.models) entry; used by C(make pin-models)
    on the controller after the user confirmed (CONFIRM=yes). Writes atomically (temp, fsync, rename).
version_added: "0.1.0"
options:
  path:
    description: The lock file (symlinks are followed; the real file is replaced).
    type: path
    required: true
  name:
    description: The model entry's name.
    type: str
    required: true
  sha256:
    description: The SHA256 seen.
    type: str
    required: true
  size:
    description: The size seen, in bytes.
    type: int
    required: true
  note:
    description: The comment written after the SHA256 (when and from where it was pinned).
    type: str
    required: true
author: sdenv
"""

EXAMPLES = r"""
- name: Pin the glasses LoRA
  model_lock_pin:
    path: inventory/group_vars/all/lock.yml
    name: glasses-2
    sha256: e68952afd3de0000000000000000000000000000000000000000000000000000
    size: 151110000
    note: pinned by make pin-models 2026-11-24 from https://civitai.com/api/download/models/000000
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The file written (symlinks resolved).
  type: str
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.model_lock_edit import LockEditError, pin
from ansible.module_utils.sdenv_atomic import write_bytes_atomic


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            name=dict(type="str", required=True),
            sha256=dict(type="str", required=True),
            size=dict(type="int", required=True),
            note=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    path = os.path.realpath(module.params["path"])
    try:
        with open(path, encoding="utf-8") as fh:
            before = fh.read()
        after = pin(
            before,
            module.params["name"],
            module.params["sha256"],
            module.params["size"],
            module.params["note"],
        )
    except OSError as exc:
        module.fail_json(msg=f"cannot read the lock file {path} ({exc.strerror})")
    except LockEditError as exc:
        module.fail_json(msg=str(exc))
    changed = after != before
    if changed and not module.check_mode:
        st = os.stat(path)
        write_bytes_atomic(
            path, after.encode("utf-8"), mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid
        )
    module.exit_json(
        changed=changed,
        path=path,
        diff={"before": before, "after": after, "before_header": path, "after_header": path},
    )


if __name__ == "__main__":
    main()
