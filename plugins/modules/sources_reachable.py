#!/usr/bin/python
"""Ansible module: does every source this run will fetch from answer, from this host? Changes nothing."""

DOCUMENTATION = r"""
module: sources_reachable
short_description: Check, before any change, that every source the run needs answers from this host
description:
  - For each source (a git repository at its pinned commit, an archive, a model URL, the package index),
    skips it when the host has it already (a tree at the commit, a model the stat cache vouches for, a cached
    archive) and otherwise probes it the cheap way (plugins/module_utils/sdenv_reach.py says how and why).
  - Fails with one sentence per source that does not answer, saying what to do. Only reads; the preflight
    (action sdenv_preflight) runs it before any task that changes the host.
options:
  sources:
    description: The sources, as sdenv_reach.needed_sources makes them.
    type: list
    elements: dict
    required: true
  environment:
    description:
      - Proxy and CA variables (sdenv_reach.network_env) the probes use, as the roles' tasks get them.
        A proxy URL may hold credentials, so it is never logged.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Check the sources
  sources_reachable:
    sources: [{kind: index, what: the package index, url: "https://pypi.org/simple/"}]
"""

RETURN = r"""
checked:
  description: How many sources were probed (the others the host has already).
  type: int
  returned: always
unreachable:
  description: One sentence per source that did not answer.
  type: list
  elements: str
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sdenv_messages import unreachable_heading
from ansible.module_utils.sdenv_reach import already_here, unreachable_sentences


def main():
    module = AnsibleModule(
        argument_spec={
            "sources": {"type": "list", "elements": "dict", "required": True},
            "environment": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    environ = {**os.environ, **{k: str(v) for k, v in module.params["environment"].items()}}
    sources = module.params["sources"]
    checked = sum(1 for source in sources if not already_here(source, environ))
    sentences = unreachable_sentences(sources, environ)
    if sentences:
        module.fail_json(
            msg="\n".join([unreachable_heading(len(sentences)), *sentences]),
            checked=checked,
            unreachable=sentences,
        )
    module.exit_json(changed=False, checked=checked, unreachable=[])


if __name__ == "__main__":
    main()
