#!/usr/bin/python
# Thin Ansible wrapper: the logic is in module_utils/webui_hash_cache.py (unit-tested without Ansible).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: webui_hash_cache
short_description: Pre-seed the WebUI's legacy cache.json with the hashes model_file verified
description:
  - Writes C(<webui_dir>/cache.json) entries the WebUI imports on its first start, so it does not re-hash
    the checkpoints and LoRAs this toolkit already verified.
  - Does nothing once the WebUI has its own C(cache/) directory (it ignores cache.json from then on).
  - The file is written atomically and belongs to I(owner).
version_added: "0.1.0"
options:
  webui_dir:
    description: The WebUI directory (its data path).
    type: path
    required: true
  installed:
    description: The results of model_file for the models (each with C(dest), C(sha256), C(mtime), and
      C(addnet_sha256) for LoRA .safetensors files).
    type: list
    elements: dict
    required: true
  kind_dirs:
    description: The WebUI's folder for each kind of model (C(checkpoint), C(lora)); the cache title is the
      path under that folder.
    type: dict
    required: true
  owner:
    description: Owner of cache.json (the WebUI's user).
    type: str
author: sdenv
"""

EXAMPLES = r"""
- name: Pre-seed the WebUI hash cache
  webui_hash_cache:
    webui_dir: /home/dummy/stable-diffusion-webui
    owner: dummy
    kind_dirs:
      checkpoint: /home/dummy/stable-diffusion-webui/models/Stable-diffusion
      lora: /home/dummy/stable-diffusion-webui/models/Lora
    installed:
      - dest: /home/dummy/stable-diffusion-webui/models/Stable-diffusion/beautifulRealistic_v7.safetensors
        sha256: 1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c
        mtime: 1732485000.25
"""

RETURN = r"""
skipped:
  description: Why nothing was written (the WebUI already has cache/), or null.
  type: str
  returned: always
titles:
  description: The cache titles written or confirmed.
  type: list
  returned: always
path:
  description: Path of cache.json.
  type: str
  returned: always
"""

import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.webui_hash_cache import HashCacheError, entries_from_installed, seed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            webui_dir=dict(type="path", required=True),
            installed=dict(type="list", elements="dict", required=True),
            kind_dirs=dict(type="dict", required=True),
            owner=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    uid = gid = -1
    owner = module.params["owner"]
    if owner:
        try:
            entry = pwd.getpwnam(owner)
            uid, gid = entry.pw_uid, entry.pw_gid
        except KeyError:
            if not module.check_mode:
                module.fail_json(msg=f"the owner {owner!r} of the WebUI hash cache does not exist")
    try:
        entries = entries_from_installed(module.params["installed"], module.params["kind_dirs"])
        result = seed(module.params["webui_dir"], entries, uid, gid, module.check_mode)
    except HashCacheError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
