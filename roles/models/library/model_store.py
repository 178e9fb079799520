#!/usr/bin/python
# Thin Ansible wrapper: the logic is in module_utils/model_store_move.py (unit-tested without Ansible).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_store
short_description: Make the model store ready for model_file, moving models out of the WebUI tree
description:
  - Makes the store's folder for each kind (module_utils/model_store.py names them), owned by I(owner).
  - A model of I(models) that sits in the WebUI tree (models/Stable-diffusion, models/Lora, the layout before
    the store) moves into the store without a download, its SHA256 checked against the lock first; a copy
    there of what the store already holds is removed. The WebUI would otherwise list it twice.
  - A file at a model's place in the store that the toolkit did not put there (the stat cache has no entry
    for it) is adopted when its bytes are the lock's and refused otherwise, before anything changes; so is a
    file with other bytes under a model's name in the WebUI tree, and a link or folder at either place.
  - Runs as root in the dummy's home; no symbolic link another account could make is followed.
version_added: "0.2.0"
options:
  store: {description: The model store (settings.yml sdenv_model_store)., type: path, required: true}
  webui_dir: {description: The WebUI tree whose model folders are emptied into the store., type: path}
  models:
    description: The lock entries to place (name, kind, file, sha256); pending ones (no sha256) are skipped.
    type: list
    elements: dict
    required: true
  owner: {description: Owner of the folders made., type: str}
  stat_cache: {description: model_file's stat cache (root-only)., type: path, required: true}
author: sdenv
"""

EXAMPLES = r"""
- name: Move the models into the store
  model_store:
    store: /home/dummy/sd-models
    webui_dir: /home/dummy/stable-diffusion-webui
    models: "{{ sdenv_models_selected }}"
    owner: dummy
    stat_cache: /var/lib/sdenv/models/stat-cache.json
"""

RETURN = r"""
kind_dirs:
  description: The store's folder for each kind.
  type: dict
  returned: always
moved:
  description: One line for each model moved, copy removed or file adopted, and each folder made.
  type: list
  returned: always
made_store:
  description: Whether this run made the store's directory itself (the record lists it then).
  type: bool
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.model_fastpath import resolve_ids
    from ansible.module_utils.model_store import kind_dirs
    from ansible.module_utils.model_store_move import StoreError, StoreMover, lines
    from ansible.module_utils.sdenv_atomic import LinkRefused, makedirs_nofollow
except ImportError:  # installed as the Ansible collection sdenv.toolkit
    from ansible_collections.sdenv.toolkit.plugins.module_utils.model_fastpath import resolve_ids
    from ansible_collections.sdenv.toolkit.plugins.module_utils.model_store import kind_dirs
    from ansible_collections.sdenv.toolkit.plugins.module_utils.model_store_move import (
        StoreError,
        StoreMover,
        lines,
    )
    from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_atomic import (
        LinkRefused,
        makedirs_nofollow,
    )


def _existing_parent(path):
    """The nearest existing directory above `path` (makedirs_nofollow walks it without following links)."""
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return parent


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store=dict(type="path", required=True),
            webui_dir=dict(type="path"),
            models=dict(type="list", elements="dict", required=True),
            owner=dict(type="str"),
            stat_cache=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    store = os.path.abspath(p["store"])
    try:
        uid, gid = resolve_ids(p["owner"], None)
    except KeyError:
        if not module.check_mode:
            module.fail_json(msg=f"the owner {p['owner']!r} of the model store {store} does not exist")
        uid = gid = -1
    pinned = [m for m in p["models"] if m.get("sha256")]
    mover = StoreMover(store, p["webui_dir"], pinned, p["stat_cache"], uid, gid)
    folders = kind_dirs(store)
    made_store = not os.path.isdir(store)
    try:
        steps = mover.plan()
        missing = [d for d in folders.values() if not os.path.isdir(d)]
        changes = lines(steps) + [f"make {d}" for d in missing]
        if module.check_mode or not changes:
            module.exit_json(
                changed=bool(changes),
                kind_dirs=folders,
                made_store=made_store and not module.check_mode,
                moved=changes,
                diff={"before": "", "after": "".join(line + "\n" for line in changes)},
            )
        for folder in missing:
            os.close(makedirs_nofollow(folder, _existing_parent(folder), 0o755, uid, gid))
        done = lines(mover.apply(steps))
    except (StoreError, LinkRefused) as exc:
        module.fail_json(msg=str(exc), kind_dirs=folders)
    changes = done + [f"make {d}" for d in missing]
    module.exit_json(
        changed=bool(changes),
        kind_dirs=folders,
        made_store=made_store,
        moved=changes,
        diff={"before": "", "after": "".join(line + "\n" for line in changes)},
    )


if __name__ == "__main__":
    main()
