# Controller side of model_file: the token from the controller's environment, download progress, and a
# download that stops with the run.
#
# 1. The token: `token_env` names a variable in the environment of `make provision` (the controller). It is
#    passed as the no_log `token` argument of the one module call that downloads, over pipelining only (the
#    base class, plugins/action/sdenv_secret_module.py): it travels on the interpreter's standard input and
#    never touches a file, a command line or `environment:`. The calls that only look (model_file_check,
#    the probe) do not get it.
# 2. The run: the small model_file_check module first; a present file the stat cache vouches for is then
#    done. Otherwise model_file runs with download=false (the whole job when the present file hashes right;
#    it also says how much an interrupted download left in the .part). When a download is needed, model_file
#    runs again, synchronously: never under async_wrapper, which would detach it from the run (it went on
#    for hours after Ctrl-C), write its arguments into a module file and its result into a job file.
# 3. While it runs, a thread of this worker process shows progress: every few seconds one `cat` of the
#    module's progress file over a second copy of the connection (its own become state, so the two commands
#    never share one), printed as percent, MB/s and ETA.
# 4. Stopping: Ctrl-C and SIGTERM reach the worker through ansible-playbook, and the worker signals its
#    process group, the module included (local connection). kill -9 of make's whole process group reaches
#    no worker (each is in its own session): the thread sees its parent ansible-playbook gone and sends
#    SIGTERM to this worker, which does the same. Over SSH the module is not in any controller process
#    group: it finds out through its stdout heartbeat (module_utils/sdenv_interrupt.py) once the worker, and
#    so the ssh session, is gone. The module then stops within seconds, keeps the .part, removes its payload.
from __future__ import annotations

import os
import shlex
import signal
import sys
import uuid
from pathlib import Path

from ansible.plugins.loader import action_loader
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

# The progress watch and its line are shared with the WebUI's actions (plugins/module_utils/sdenv_progress.py):
# found above this file, in this repository or in the installed collection.
_SHARED = next(
    parent / "plugins" / "module_utils"
    for parent in Path(__file__).resolve().parents
    if (parent / "plugins" / "module_utils" / "sdenv_progress.py").is_file()
)
if str(_SHARED) not in sys.path:
    sys.path.append(str(_SHARED))
import sdenv_progress  # noqa: E402
from sdenv_progress import format_progress  # noqa: E402,F401 - the tests and other callers use it from here

# Run from this repository, ansible.cfg's action_plugins names plugins/action, where it lives; installed as
# the Ansible collection sdenv.toolkit (galaxy.yml), it is the collection's.
SecretModuleAction = action_loader.get("sdenv_secret_module", class_only=True) or action_loader.get(
    "sdenv.toolkit.sdenv_secret_module", class_only=True
)
if SecretModuleAction is None:
    raise ImportError(
        "the sdenv_secret_module action (plugins/action) is not on Ansible's action plugin path"
    )

MB = 1_000_000
# What model_file_check takes of model_file's arguments.
CHECK_ARGS = ("dest", "sha256", "size", "name", "owner", "group", "mode", "stat_cache", "addnet_hash")


def ended_without_result(result):
    """True when the module process died before writing its result (killed, out of memory)."""
    return result.get("_ansible_parsed") is False


def exit_reason(rc):
    """Words for how a process ended: shells report death by signal N as 128 + N."""
    if isinstance(rc, int) and rc < 0:
        rc = 128 - rc
    if isinstance(rc, int) and rc > 128:
        try:
            return f"killed by {signal.Signals(rc - 128).name}"
        except ValueError:
            pass
    return f"exit status {rc}"


class ActionModule(SecretModuleAction):
    SECRET_ARGS = ("token",)

    def _sibling(self, name):
        """`name` as the task's own module is named: `sdenv.toolkit.<name>` when the task called the collection's
        `sdenv.toolkit.model_file`, the plain name (found on the role's library path) when it called `model_file`."""
        resolved = getattr(self._task, "resolved_action", None) or self._task.action
        namespace = resolved.rpartition(".")[0]
        return f"{namespace}.{name}" if namespace and namespace != "ansible.legacy" else name

    def run(self, tmp=None, task_vars=None):
        result = super(SecretModuleAction, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        token_env = args.get("token_env")
        if token_env and not args.get("token"):
            token = os.environ.get(token_env)
            if token:
                args["token"] = token
        looking = {k: v for k, v in args.items() if k != "token"}
        if args.get("sha256") and not args.get("deep"):
            # The re-run fast path first, in the small model_file_check module: a present, unchanged model
            # then costs about a no-op task (model_file's payload carries the whole download machinery).
            quick = self._execute_module(
                module_name=self._sibling("model_file_check"),
                module_args={k: args[k] for k in CHECK_ARGS if args.get(k) is not None},
                task_vars=task_vars,
            )
            if quick.pop("settled", False) and not quick.get("failed"):
                self._remove_tmp_path(self._connection._shell.tmpdir)
                return merge_hash(result, quick)
        probe = self._execute_module(
            module_name=self._sibling("model_file"),
            module_args={**looking, "download": False},
            task_vars=task_vars,
        )
        if probe.get("failed") or not probe.get("needs_download") or self._task.check_mode:
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return merge_hash(result, probe)
        final = self._download(args, looking, probe, task_vars)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return merge_hash(result, final)

    def _progress_file(self, args):
        """This run's own progress file: two runs on one model each show their own state."""
        if args.get("progress_file"):
            return args["progress_file"]
        cache = args.get("stat_cache")
        base = os.path.dirname(cache) if cache else os.path.dirname(args["dest"])
        return os.path.join(base, f".{os.path.basename(args['dest'])}.{uuid.uuid4().hex[:8]}.progress.json")

    def _download(self, args, looking, probe, task_vars):
        name = args.get("name") or os.path.basename(args["dest"])
        host = task_vars.get("inventory_hostname", "?")
        progress_file = self._progress_file(args)
        kept = probe.get("partial_size")
        if probe.get("downloading_elsewhere"):
            what = f"another run ({probe['downloading_elsewhere']}) is downloading it: waiting for that run"
        elif kept:
            what = f"downloading, resuming from {kept / MB:.1f} MB kept in {args['dest']}.part"
        else:
            what = "downloading"
        display.display(f"[{host}] {name}: {what}")
        watch = sdenv_progress.ProgressWatch(self, progress_file, host, display.display)
        watch.start()
        try:
            final = self._execute_module_piped(
                self._sibling("model_file"), {**args, "progress_file": progress_file}, task_vars
            )
        finally:
            watch.stop()
        if ended_without_result(final):
            return self._after_a_crash(name, looking, final, progress_file, task_vars)
        return final

    def _after_a_crash(self, name, looking, crashed, progress_file, task_vars):
        """The module died without a result: say what it left, as it is now (looked at, not assumed)."""
        self._low_level_execute_command(f"rm -f {shlex.quote(progress_file)}", sudoable=True)
        after = self._execute_module(
            module_name=self._sibling("model_file"),
            module_args={**looking, "download": False},
            task_vars=task_vars,
        )
        if not after.get("failed") and not after.get("needs_download"):
            return after  # it was installed before the process died
        how = exit_reason(crashed.get("rc"))
        kept = after.get("partial_size")
        part = looking["dest"] + ".part"
        left = (
            f"{kept} bytes are kept in {part}: run again to resume"
            if kept
            else "no partial file is left: run again to start over"
        )
        return {
            "failed": True,
            "changed": False,
            "msg": f"the download of {name} ended without a result (the module process was {how}); {left}",
            "partial_size": kept,
        }
