#!/usr/bin/python
"""Ansible module: take or release the host's run lock (logic: module_utils/sdenv_run_lock.py)."""

DOCUMENTATION = r"""
module: sdenv_run_lock
short_description: One changing run per host at a time (the run lock in the state directory)
description:
  - C(held) takes C(<state_dir>/run.lock) for the run named by I(token) and leaves a helper process holding it
    until that run ends (see module_utils/sdenv_run_lock.py for why); a later task of the same run finds it
    held already. Another run's lock is waited for up to I(timeout) seconds, then refused in one sentence
    naming it. C(probe) only says whether the lock is free, this run's, or another run's (and whose).
  - C(released) ends this run's hold, so a waiting run goes on at once.
  - The plugins/action/sdenv_run_lock.py action fills in I(token), I(controller) and I(controller_pid), and
    prints the "waiting" sentence on the controller before a wait.
  - In check mode nothing is taken: a dry run changes nothing another run could trip over.
options:
  state_dir:
    description: The state directory; created root-owned 0755 like every target creates it.
    type: path
    required: true
  state:
    description: C(held), C(released) or C(probe).
    type: str
    choices: [held, released, probe]
    default: held
  target:
    description: The make target of this run, for the messages.
    type: str
    default: ""
  timeout:
    description: Seconds to wait for another run's lock before refusing.
    type: int
    default: 0
  token:
    description: Names this run (controller, ansible-playbook pid and its start).
    type: str
    required: true
  controller:
    description: The controller's host name, for the messages.
    type: str
    default: ""
  controller_pid:
    description: The pid of this run's ansible-playbook process on the controller.
    type: int
    required: true
  local:
    description: True when this host is the controller (local connection).
    type: bool
    default: false
  take_over:
    description: The token of a holder this controller found no longer running; its helper is stopped.
    type: str
    default: ""
  subject:
    description: What the lock guards, for the messages (the controller's fleet cache names itself).
    type: str
    default: this host
  private_dir:
    description: >-
      I(state_dir) is a directory of the user running the task (the fleet cache on the controller), made 0700
      when missing, not the root-owned state directory.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Take this host's run lock
  sdenv_run_lock:
    state_dir: /var/lib/sdenv
    target: provision
    timeout: 900
"""

RETURN = r"""
lock:
  description: What the run found - C(acquired), C(ours), C(released), C(free), C(busy) or C(skipped).
  type: str
  returned: always
holder:
  description: The record of the run holding the lock (C(probe) of a busy lock).
  type: dict
  returned: always
message:
  description: The sentence naming the other run this one waits for (C(probe) of a busy lock).
  type: str
  returned: state is probe
helper_pid:
  description: The helper process holding the lock for this run (C(acquired)).
  type: int
  returned: when acquired
notes:
  description: Sentences for the user (a lock taken over from a run that ended without releasing it).
  type: list
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.provision_record import ensure_state_dir
from ansible.module_utils.sdenv_run_lock import (
    RunLockError,
    private_dir,
    probe,
    release,
    take_for_run,
    waiting_message,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "state_dir": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["held", "released", "probe"], "default": "held"},
            "target": {"type": "str", "default": ""},
            "timeout": {"type": "int", "default": 0},
            "token": {"type": "str", "required": True},
            "controller": {"type": "str", "default": ""},
            "controller_pid": {"type": "int", "required": True},
            "local": {"type": "bool", "default": False},
            "take_over": {"type": "str", "default": ""},
            "subject": {"type": "str", "default": "this host"},
            "private_dir": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "lock": "skipped", "holder": {}, "notes": []}
    if module.check_mode:
        module.exit_json(**result)
    if p["state"] == "probe":
        result["lock"], result["holder"] = probe(p["state_dir"], p["token"])
        result["message"] = (
            waiting_message(result["holder"], p["timeout"], p["subject"]) if result["lock"] == "busy" else ""
        )
        module.exit_json(**result)
    if p["state"] == "released":
        result["lock"] = "released" if release(p["state_dir"], p["token"]) else "free"
        module.exit_json(**result)
    try:
        # helper_pid and helper_start are for plugins/callback/sdenv_run_lock.py, which ends the helper when
        # the playbook ends.
        result.update(
            take_for_run(
                p,
                p["timeout"],
                prepare=(lambda: private_dir(p["state_dir"]))
                if p["private_dir"]
                else lambda: ensure_state_dir(p["state_dir"])[1] is None,
                take_over=p["take_over"],
                subject=p["subject"],
            )
        )
    except RunLockError as exc:
        module.fail_json(msg=str(exc), **result)
    # Never "changed": the lock is this run's, not the host's state, and a second provision reports changed=0.
    module.exit_json(**result)


if __name__ == "__main__":
    main()
