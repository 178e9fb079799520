# The controller's half of the run lock (plugins/modules/sdenv_run_lock.py, module_utils/sdenv_run_lock.py):
# names this run to the host (the ansible-playbook process on this controller: the worker running this action
# is its child), and prints "another make provision, pid N, started at T, is changing this host: waiting"
# before the module waits, since a module cannot print while it runs.
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "plugins" / "module_utils") not in sys.path:
    sys.path.append(str(ROOT / "plugins" / "module_utils"))

from sdenv_run_lock import before_waiting, controller_run  # noqa: E402

display = Display()


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        controller = socket.gethostname()
        args = {
            **self._task.args,
            **controller_run(os.getppid()),
            "local": self._connection.transport in ("local", "ansible.builtin.local"),
        }
        if args.get("state", "held") == "held" and not self._play_context.check_mode:
            found = self._execute_module("sdenv_run_lock", {**args, "state": "probe"}, task_vars=task_vars)
            if found.get("failed"):
                return {**result, **found}
            if found.get("lock") == "busy":
                args["take_over"], message = before_waiting(
                    found.get("holder") or {},
                    controller,
                    args.get("timeout", 0),
                    args.get("subject", "this host"),
                )
                if message:
                    display.display(f"{task_vars.get('inventory_hostname', '')}: {message}")
        result.update(self._execute_module("sdenv_run_lock", args, task_vars=task_vars))
        for note in result.get("notes") or []:
            display.display(f"{task_vars.get('inventory_hostname', '')}: {note}")
        return result
