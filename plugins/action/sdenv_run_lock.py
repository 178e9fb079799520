# The controller's half of the run lock (plugins/modules/sdenv_run_lock.py, module_utils/sdenv_run_lock.py):
# names this run to the host (the ansible-playbook process on this controller: the worker running this action
# is its child), and prints "another make provision, pid N, started at T, is changing this host: waiting"
# before the module waits, since a module cannot print while it runs.
from __future__ import annotations

import os
import socket

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def process_start(pid):
    """The start time of a controller process (Linux /proc; elsewhere the pid alone names the run)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run_has_ended(holder, controller):
    """The holder is a run of this controller whose ansible-playbook is gone (or its pid now someone else's).
    Its helper on the host can outlive it over SSH (tied to a connection Ansible keeps and this run shares)."""
    parts = str(holder.get("token", "")).rsplit(":", 2)
    if holder.get("controller") != controller or len(parts) != 3 or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    if start:
        return process_start(pid) != start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        controller_pid = os.getppid()
        controller = socket.gethostname()
        args = {
            **self._task.args,
            "controller": controller,
            "controller_pid": controller_pid,
            "token": f"{controller}:{controller_pid}:{process_start(controller_pid)}",
            "local": self._connection.transport in ("local", "ansible.builtin.local"),
        }
        if args.get("state", "held") == "held" and not self._play_context.check_mode:
            found = self._execute_module("sdenv_run_lock", {**args, "state": "probe"}, task_vars=task_vars)
            if found.get("failed"):
                return {**result, **found}
            holder = found.get("holder") or {}
            if found.get("lock") == "busy" and run_has_ended(holder, controller):
                args["take_over"] = holder["token"]
            elif found.get("lock") == "busy":
                display.display(f"{task_vars.get('inventory_hostname', '')}: {found['message']}")
        result.update(self._execute_module("sdenv_run_lock", args, task_vars=task_vars))
        for note in result.get("notes") or []:
            display.display(f"{task_vars.get('inventory_hostname', '')}: {note}")
        return result
