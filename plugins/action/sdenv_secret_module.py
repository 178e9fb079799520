# Run a module whose arguments carry a secret (the dummy's password, a Civitai token) so that the secret never
# touches a file, on the controller or on the host. The actions of such modules build on this class:
#
#     from ansible.plugins.loader import action_loader
#     class ActionModule(action_loader.get("sdenv_secret_module", class_only=True)):
#         SECRET_ARGS = ("password",)
#
# How Ansible hands a module its arguments (ansible-core 2.19: executor/module_common.py builds the payload,
# plugins/action/__init__.py:_execute_module sends it): the arguments are embedded in the AnsiballZ wrapper
# script, next to a zip of the module's code.
# - With pipelining, the wrapper goes to the interpreter's standard input (local connection: a pipe to the
#   process; ssh: the session's stdin, through sshd), and only the zip of code is unpacked, into a temporary
#   directory of the host that the wrapper removes when the module ends. The arguments exist only in memory.
# - Without pipelining the whole wrapper, arguments included, is first written to
#   <remote_tmp>/ansible-tmp-*/AnsiballZ_<module>.py on the host (and stays there if the run is killed).
# - async (async_wrapper) never pipelines, and also writes the module's result into a job file under
#   ~/.ansible_async.
# So a module with a secret runs only over pipelining, synchronously: pipelining is switched on for that one
# call, whatever the configuration says. When Ansible still cannot pipe (become method su, keep_remote_files,
# an ssh connection that forces a tty) or would print the arguments (ANSIBLE_DEBUG), the task fails with one
# sentence and the module never runs. The no_log arguments keep the secret out of results, -vvv and the
# host's syslog; it never goes on a command line or into `environment:`.
from __future__ import annotations

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

_UNSET = object()


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    # Arguments of the module that hold a secret; a non-empty one makes the call pipelined-only.
    SECRET_ARGS: tuple[str, ...] = ()

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        result = merge_hash(
            result, self._execute_module_piped(self._task.action, dict(self._task.args), task_vars)
        )
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _execute_module_piped(self, module_name, module_args, task_vars):
        """_execute_module over pipelining. Without pipelining possible: a module with a secret does not run
        (a failed result says why); one without runs the way Ansible can."""
        secrets = [name for name in self.SECRET_ARGS if module_args.get(name)]
        conn = self._connection
        saved = conn._options.get("pipelining", _UNSET)
        try:
            conn.set_option("pipelining", True)
        except Exception:  # a connection plugin without the option: is_pipelining_enabled decides below
            saved = _UNSET
        try:
            refusal = self._why_a_file(module_name) if secrets else None
            if refusal:
                return {
                    "failed": True,
                    "changed": False,
                    "msg": (
                        f"refusing to run {module_name} on {self._host_name(task_vars)}: its "
                        f"{' and '.join(secrets)} would end up in a file, because {refusal}"
                    ),
                }
            return self._execute_module(module_name=module_name, module_args=module_args, task_vars=task_vars)
        finally:
            if saved is not _UNSET:
                conn._options["pipelining"] = saved

    def _why_a_file(self, module_name):
        """Why this call cannot keep its arguments out of files (with what to do), or None when it can."""
        if C.DEFAULT_KEEP_REMOTE_FILES:
            return "ANSIBLE_KEEP_REMOTE_FILES keeps every module and its arguments on the host: unset it"
        if C.DEFAULT_DEBUG:
            return "ANSIBLE_DEBUG prints every module's arguments: run without it"
        if self._is_pipelining_enabled("new"):
            return None
        become = self._connection.become
        if become is not None and not getattr(become, "pipelining", True):
            return (
                f"the become method {become.name!r} cannot pass a module on standard input: use sudo "
                "(ansible_become_method) or connect as root"
            )
        return (
            f"the {self._connection.transport!r} connection cannot pass {module_name} on standard input here "
            "(pipelining off: an ssh connection that forces a tty with -tt or RequestTTY cannot pipe)"
        )

    @staticmethod
    def _host_name(task_vars):
        return (task_vars or {}).get("inventory_hostname", "this host")
