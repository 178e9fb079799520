#!/usr/bin/python
# The re-run fast path of model_file as a module of its own, which the model_file action plugin runs first.
# A task's cost on the host grows with the module's AnsiballZ payload and what it imports; model_file's payload
# carries the whole download machinery. This one carries only model_fastpath and stat_cache, so a present,
# unchanged model costs about what a no-op task costs.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_file_check
short_description: Say whether a model file is present and vouched for by the stat cache, without reading it
description:
  - Read-only. Settled when the file's size, mtime and inode match the stat-cache entry recorded for the pinned
    SHA256 and its owner and mode are already right; the result is then model_file's own. Otherwise it reports
    C(settled=false) and the model_file action plugin runs the model_file module.
version_added: "0.1.0"
options:
  dest: {description: Final path of the model file., type: path, required: true}
  sha256: {description: The pinned SHA256., type: str, required: true}
  size: {description: The pinned size in bytes, when known., type: int}
  name: {description: Name used in messages (default the basename of I(dest))., type: str}
  owner: {description: Owner the installed file must have., type: str}
  group: {description: Group the installed file must have., type: str}
  mode: {description: Mode the installed file must have., type: raw, default: "0644"}
  stat_cache: {description: Path of the stat cache (JSON)., type: path}
  addnet_hash: {description: The cache entry must also hold the kohya addnet hash., type: bool, default: false}
author: sdenv
"""

RETURN = r"""
settled:
  description: True when nothing needs doing; the rest of the result is then model_file's.
  type: bool
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.model_fastpath import parse_mode, resolve_ids, settled_result
except ImportError:  # installed as the Ansible collection sdenv.toolkit (galaxy.yml)
    from ansible_collections.sdenv.toolkit.plugins.module_utils.model_fastpath import (
        parse_mode,
        resolve_ids,
        settled_result,
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            sha256=dict(type="str", required=True),
            size=dict(type="int"),
            name=dict(type="str"),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0644"),
            stat_cache=dict(type="path"),
            addnet_hash=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        uid, gid = resolve_ids(p["owner"], p["group"])
        mode = parse_mode(p["mode"])
    except (KeyError, ValueError):  # model_file says what is wrong
        module.exit_json(changed=False, settled=False)
    settled = settled_result(
        p["dest"],
        p["sha256"],
        name=p["name"],
        size=p["size"],
        stat_cache=p["stat_cache"],
        addnet=p["addnet_hash"] and p["dest"].lower().endswith(".safetensors"),
        uid=uid,
        gid=gid,
        mode=mode,
    )
    if settled is None:
        module.exit_json(changed=False, settled=False)
    for warning in settled.pop("warnings"):
        module.warn(warning)
    module.exit_json(settled=True, **settled)


if __name__ == "__main__":
    main()
