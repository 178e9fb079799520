#!/usr/bin/python
"""Ansible module: the toolkit's `sdenv:` section of ComfyUI's extra_model_paths.yaml (the model store)."""

DOCUMENTATION = r"""
module: comfyui_model_paths
short_description: Point ComfyUI at the model store through its extra_model_paths.yaml, keeping the user's
description:
  - Writes the marked `sdenv:` section (base_path and one key per ComfyUI folder name); every other byte of the
    file is kept. A file that does not parse, or that has an `sdenv` section the toolkit did not write, fails
    the task with one sentence and is left as it is.
  - Writes atomically and only when the section differs. Run it as the file's owner (become_user).
options:
  path: {description: The extra_model_paths.yaml in the ComfyUI tree., type: path, required: true}
  base_path: {description: The model store., type: path, required: true}
  folders: {description: "ComfyUI folder name -> folder under the store (checkpoints, loras).", type: dict,
    required: true}
"""

EXAMPLES = r"""
- name: ComfyUI reads the model store
  comfyui_model_paths:
    path: /home/dummy/ComfyUI/extra_model_paths.yaml
    base_path: /home/dummy/sd-models
    folders: {checkpoints: checkpoints, loras: loras}
"""

RETURN = r"""
section: {description: The toolkit's section as ComfyUI reads it after the call., type: dict, returned: always}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.comfyui_model_paths import ModelPathsError, merged_text, read_section
from ansible.module_utils.sdenv_atomic import write_bytes_atomic


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "base_path": {"type": "path", "required": True},
            "folders": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        current = None
        if os.path.lexists(p["path"]):
            with open(p["path"], encoding="utf-8") as handle:
                current = handle.read()
        new = merged_text(current, p["base_path"], p["folders"], p["path"])
        changed = new != current
        if changed and not module.check_mode:
            write_bytes_atomic(p["path"], new.encode("utf-8"), mode=0o644)
    except (ModelPathsError, OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=changed,
        section=read_section(new, p["path"]),
        diff={"before": current or "", "after": new, "before_header": p["path"], "after_header": p["path"]},
    )


if __name__ == "__main__":
    main()
