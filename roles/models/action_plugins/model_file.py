# Controller side of model_file: the token from the controller's environment, and download progress.
#
# 1. The token: `token_env` names a variable in the environment of `make provision` (the controller). It is
#    passed to the module as the no_log `token` argument, which travels in the module's arguments (stdin with
#    pipelining, or a 0600 temp file), never on a command line or in `environment:` where -vvv and `ps` show it.
# 2. Progress: the small model_file_check module runs first: a present file the stat cache vouches for is
#    then done (one small module run, no polling). Otherwise the module runs synchronously with
#    download=false, which is the whole job when the present file hashes right. When a download is needed, the
#    module runs again under async_wrapper with a progress file; this plugin polls that file (and the async
#    job file) with one small raw command every few seconds and prints percent, MB/s and ETA.
from __future__ import annotations

import json
import os
import shlex
import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

POLL_SECONDS = 2.0
PRINT_SECONDS = 5.0
# How long a download may take before the async wrapper gives up (the module's own timeouts come first).
ASYNC_LIMIT = 6 * 3600
MB = 1_000_000
# What model_file_check takes of model_file's arguments.
CHECK_ARGS = ("dest", "sha256", "size", "name", "owner", "group", "mode", "stat_cache", "addnet_hash")


def format_progress(doc):
    """One line: name, phase, percent, MB, MB/s, ETA (the module_utils has the same for its own use)."""
    received = doc.get("received") or 0
    total = doc.get("total")
    rate = doc.get("rate") or 0.0
    parts = [doc.get("name") or "model", doc.get("phase") or ""]
    if total:
        parts.append(f"{100.0 * received / total:5.1f}% {received // MB}/{total // MB} MB")
    else:
        parts.append(f"{received // MB} MB")
    parts.append(f"{rate / MB:.1f} MB/s")
    eta = doc.get("eta")
    if eta is not None:
        parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
    return "  ".join(p for p in parts if p)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        token_env = args.get("token_env")
        if token_env and not args.get("token"):
            token = os.environ.get(token_env)
            if token:
                args["token"] = token
        if args.get("sha256") and not args.get("deep"):
            # The re-run fast path first, in the small model_file_check module: a present, unchanged model
            # then costs about a no-op task (model_file's payload carries the whole download machinery).
            quick = self._execute_module(
                module_name="model_file_check",
                module_args={k: args[k] for k in CHECK_ARGS if args.get(k) is not None},
                task_vars=task_vars,
            )
            if quick.pop("settled", False) and not quick.get("failed"):
                self._remove_tmp_path(self._connection._shell.tmpdir)
                return merge_hash(result, quick)
        probe = self._execute_module(
            module_name="model_file", module_args={**args, "download": False}, task_vars=task_vars
        )
        if probe.get("failed") or not probe.get("needs_download") or self._task.check_mode:
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return merge_hash(result, probe)
        progress_file = args.get("progress_file") or self._default_progress_file(args)
        args["progress_file"] = progress_file
        final = self._download_with_progress(args, progress_file, task_vars)
        return merge_hash(result, final)

    @staticmethod
    def _default_progress_file(args):
        cache = args.get("stat_cache")
        base = os.path.dirname(cache) if cache else os.path.dirname(args["dest"])
        return os.path.join(base, "." + os.path.basename(args["dest"]) + ".progress.json")

    def _download_with_progress(self, args, progress_file, task_vars):
        name = args.get("name") or os.path.basename(args["dest"])
        host = task_vars.get("inventory_hostname", "?")
        saved_async = self._task.async_val
        self._task.async_val = ASYNC_LIMIT
        try:
            started = self._execute_module(
                module_name="model_file", module_args=args, task_vars=task_vars, wrap_async=True
            )
        finally:
            self._task.async_val = saved_async
        if started.get("failed") or not started.get("ansible_job_id"):
            return started
        jid = started["ansible_job_id"]
        job_file = started.get("results_file")
        display.display(f"[{host}] {name}: downloading (job {jid})")
        last_print = 0.0
        while True:
            time.sleep(POLL_SECONDS)
            progress, finished = self._poll(progress_file, job_file)
            now = time.monotonic()
            if progress and now - last_print >= PRINT_SECONDS and not finished:
                display.display(f"[{host}] {format_progress(progress)}")
                last_print = now
            if finished:
                break
        status = self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "_async_dir": os.path.dirname(job_file)},
            task_vars=task_vars,
        )
        self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "mode": "cleanup", "_async_dir": os.path.dirname(job_file)},
            task_vars=task_vars,
        )
        self._remove_tmp_path(self._connection._shell.tmpdir)
        for key in ("ansible_job_id", "results_file", "started", "finished", "stdout", "stdout_lines"):
            status.pop(key, None)
        if status.get("failed") and "attempts" not in status and "sha256" not in status:
            # The module died without a result (killed, out of memory): async_wrapper reports its own
            # traceback; replace the whole result with what that means for the user.
            return {
                "failed": True,
                "changed": False,
                "msg": (
                    f"the download of {name} ended without a result (the module process was killed or crashed); "
                    f"its partial file is kept: run again to resume"
                ),
            }
        if status.get("finished") is False:
            raise AnsibleError(f"the download job for {name} did not finish")
        return status

    def _poll(self, progress_file, job_file):
        """(progress dict or None, finished bool) from one raw command on the target."""
        sep = "--sdenv-job--"
        cmd = f"cat {shlex.quote(progress_file)} 2>/dev/null; echo; echo {sep}; cat {shlex.quote(job_file)} 2>/dev/null"
        out = self._low_level_execute_command(cmd, sudoable=True).get("stdout", "")
        progress_text, _, job_text = out.partition(sep)
        try:
            progress = json.loads(progress_text.strip() or "null")
        except ValueError:
            progress = None
        try:
            job = json.loads(job_text.strip() or "null")
        except ValueError:
            job = None
        # async_wrapper writes {"started": true, "finished": false} first and the module's result when done.
        finished = isinstance(job, dict) and not ("started" in job and job.get("finished") is False)
        return progress, finished
