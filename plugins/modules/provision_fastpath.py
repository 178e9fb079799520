#!/usr/bin/python
"""Ansible module: which roles of make provision may skip their work, and their stamps after a full run."""

DOCUMENTATION = r"""
module: provision_fastpath
short_description: Compare each role's inputs and outputs with the provision record, or record them
description:
  - C(check) reads the user's C(fastpath) stamps in the provision record and says which roles may skip their
    work this run, having the same inputs (lock, settings and code digests the preflight computed) and every output
    with the same fingerprint (a stat of each file, of each tree below a directory, the account's entry).
    Only reads. With I(deep), no role may skip.
  - C(stamp) fingerprints the outputs of the roles in I(roles) now and merges their stamps into the record
    (atomically, only when they changed); a role of I(plan) not in I(roles) keeps the stamp it had.
  - The logic is plugins/module_utils/sdenv_fastpath.py.
options:
  path: {description: The provision record file., type: path, required: true}
  user: {description: The dummy user whose entry holds the stamps., type: str, required: true}
  plan:
    description: "{role: {inputs, outputs}} from the preflight (fact sdenv_fastpath_plan)."
    type: dict
    required: true
  state: {description: check or stamp., type: str, choices: [check, stamp], default: check}
  roles: {description: The roles that ran in full (C(stamp))., type: list, elements: str, default: []}
  deep: {description: No fast path (make DEEP=1)., type: bool, default: false}
  models:
    description: >-
      The sha256 of each model settings.yml enables (empty for one still pending): C(stamp) returns how many
      of them the record lists as installed, for the fleet table.
    type: list
    elements: str
    default: []
  comfyui:
    description: sdenv_apps chooses ComfyUI on this host; C(stamp) returns its commit for the fleet table.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Find the roles that may skip their work
  provision_fastpath:
    path: /var/lib/sdenv/state.json
    user: dummy
    plan: "{{ sdenv_fastpath_plan }}"
  register: sdenv_fastpath
"""

RETURN = r"""
fast: {description: The roles that may skip their work., type: list, returned: always}
reasons: {description: "{role: why it runs in full}.", type: dict, returned: always}
ansible_facts:
  description: >-
    C(stamp): sdenv_host_summary, {webui_commit, comfyui_commit, venv_lock, models} as the record now says (the run's table
    shows it under the recap; read here, as the record is open anyway, so the table costs no round trip).
  type: dict
  returned: state is stamp
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.provision_record import RecordError, dumps, load, save, summary, update
from ansible.module_utils.sdenv_fastpath import fast_roles, stamp


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "plan": {"type": "dict", "required": True},
            "state": {"type": "str", "choices": ["check", "stamp"], "default": "check"},
            "roles": {"type": "list", "elements": "str", "default": []},
            "deep": {"type": "bool", "default": False},
            "models": {"type": "list", "elements": "str", "default": []},
            "comfyui": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        record = load(p["path"])
    except (RecordError, OSError) as exc:
        if p["state"] == "check":  # no readable record: every role runs in full, and says so itself
            module.exit_json(changed=False, fast=[], reasons={r: str(exc) for r in p["plan"]})
        module.fail_json(msg=str(exc))
    stamps = ((record.get("users") or {}).get(p["user"]) or {}).get("fastpath") or {}
    if p["state"] == "check":
        fast, reasons = fast_roles(p["plan"], stamps, p["deep"])
        module.exit_json(changed=False, fast=fast, reasons=reasons)
    new = {role: stamp(p["plan"][role]) for role in p["roles"] if p["plan"].get(role)}
    after = update(record, p["user"], {"fastpath": {**stamps, **new}})
    changed = dumps(record) != dumps(after)
    if changed and not module.check_mode:
        save(p["path"], after)
    # The stamps are bookkeeping, not a change a user made happen: a run that changed nothing else says 0.
    facts = {"sdenv_host_summary": summary(after, p["user"], p["models"], p["comfyui"])}
    module.exit_json(changed=False, stamped=sorted(new), ansible_facts=facts)


if __name__ == "__main__":
    main()
