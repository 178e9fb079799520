# Ends this run's hold of the run lock on the controller's own host when the playbook ends, whatever its
# outcome (plugins/module_utils/sdenv_run_lock.py): the lock is taken by the preflight (its sdenv_run_lock
# result), or by a sdenv_run_lock task. This is how a local run lets its lock go, with no task or round trip
# (run-unlock.yml skips the controller's own host); and a host that failed (a refusal after the lock, say)
# never runs another play, while its helper would only notice ansible-playbook's exit after make had already
# returned: a target refused after its lock must leave nothing behind (not even the state directory the lock
# made) by the time the user sees the refusal. Remote hosts' helpers are released by run-unlock.yml, or end
# with the run's connection (this process cannot signal them).
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from ansible.plugins.callback import CallbackBase

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "plugins" / "module_utils") not in sys.path:
    sys.path.append(str(ROOT / "plugins" / "module_utils"))

from sdenv_run_lock import is_alive

DOCUMENTATION = r"""
name: sdenv_run_lock
type: aggregate
short_description: Release the run lock this run holds on the controller's own host when the playbook ends
description:
  - Loaded by itself (callback_plugins in ansible.cfg); prints nothing.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "sdenv_run_lock"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self._helpers = []

    def v2_runner_on_ok(self, result):
        action = result._task.action.rsplit(".", 1)[-1]
        if action not in ("sdenv_run_lock", "sdenv_preflight"):
            return
        found = result._result if action == "sdenv_run_lock" else result._result.get("run_lock") or {}
        if found.get("lock") == "acquired" and found.get("local") and found.get("helper_pid"):
            self._helpers.append((int(found["helper_pid"]), found.get("helper_start")))

    def v2_playbook_on_stats(self, stats):
        for pid, start in self._helpers:
            if not is_alive(pid, start):
                continue
            try:
                os.kill(pid, signal.SIGTERM)  # the helper clears the lock, then ends
            except (PermissionError, ProcessLookupError):
                continue  # a helper of root's seen by a controller that is not: it ends with this process
            deadline = time.monotonic() + 30
            while is_alive(pid, start) and time.monotonic() < deadline:
                with contextlib.suppress(InterruptedError):
                    time.sleep(0.05)
        self._helpers = []
