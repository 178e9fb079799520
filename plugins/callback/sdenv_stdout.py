"""The toolkit's screen output: Ansible's default callback without its noise.

What a user reads when a run stops should be the sentence that says why, once. Ansible's default callback
prints a failed task three times over (the exception with its origin and a source excerpt, then the same
message again in the result dump) and a "NO MORE HOSTS LEFT" banner per play after the failure. This
callback keeps everything else of the default (it subclasses it, so its options and behaviour carry over)
and, below verbosity 1 (`ARGS=-v` shows them again):
- prints a failure's message once, as written (one sentence a line, never folded or re-quoted by a YAML
  dump): the exception block is dropped when the result carries a `msg` (the toolkit's modules and checks
  put their sentence there; a crash with no `msg` still shows its traceback);
- prints no "NO MORE HOSTS LEFT" banner (the recap that follows says which hosts failed);
- after the recap of a run over more than one host, prints one table with a row per host: platform, result,
  changed count, duration, and for a failed host the failing step and its sentence (sdenv_fleet_table);
- says in the toolkit's words, naming the host and the login user and what to do, when that user could not
  become root (Ansible's own words are "Missing sudo password"), in the printed failure and in the table;
- ends the run with one closing sentence under the recap, in the reader's language (sdenv_i18n): finished
  without errors on N hosts, or stopped with errors on these hosts.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: sdenv_stdout
    type: stdout
    short_description: Ansible's default output, each failure's sentence printed once
    description:
        - The default callback without the repeated exception block and the "NO MORE HOSTS LEFT" banners.
    extends_documentation_fragment:
      - default_callback
      - result_format_callback
    requirements:
      - set as stdout_callback in ansible.cfg
"""

import getpass
import os
import sys
import time
from pathlib import Path

from ansible import constants as C
from ansible.plugins.callback.default import CallbackModule as DefaultCallback

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.append(_MODULE_UTILS)

from sdenv_fleet_table import FleetRun
from sdenv_i18n import ngettext
from sdenv_messages import become_failure


def closing_summary(hosts, failed):
    """The run's last line: `hosts` every host the run reached, `failed` those that failed or were unreachable."""
    if not hosts:
        return ""
    if not failed:
        return ngettext(
            "Finished without errors on {count} host.",
            "Finished without errors on all {count} hosts.",
            len(hosts),
        ).format(count=len(hosts))
    return ngettext(
        "Stopped with errors on {failed} of {count} host: {names}. The message above says why and what to do.",
        "Stopped with errors on {failed} of {count} hosts: {names}. The messages above say why and what to do.",
        len(hosts),
    ).format(failed=len(failed), count=len(hosts), names=", ".join(sorted(failed)))


# Keys that say nothing beyond the message once it is printed (an item's label is in its header line).
_SAID_BY_THE_MESSAGE = frozenset(
    {
        "msg",
        "changed",
        "failed",
        "exception",
        "invocation",
        "warnings",
        "deprecations",
        "item",
        "ansible_loop_var",
    }
)


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "sdenv_stdout"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fleet = FleetRun()

    def v2_runner_on_start(self, host, task):
        self._fleet.started(host.get_name(), time.monotonic())
        super().v2_runner_on_start(host, task)

    def _finished(self, result):
        facts = result.result.get("ansible_facts") if isinstance(result.result, dict) else None
        self._fleet.finished(result._host.get_name(), time.monotonic(), changed=bool(result.result.get("changed")),
                             facts=facts)  # fmt: skip

    def v2_runner_on_ok(self, result):
        self._finished(result)
        super().v2_runner_on_ok(result)

    def v2_runner_on_skipped(self, result):
        self._finished(result)
        super().v2_runner_on_skipped(result)

    def v2_runner_on_unreachable(self, result):
        self._fleet.failed(result._host.get_name(), result.task.get_name(), result.result.get("msg"),
                           time.monotonic(), unreachable=True)  # fmt: skip
        super().v2_runner_on_unreachable(result)

    def _as_written(self, result, msg=None):
        """The failure's message when this callback prints it itself, else None (the default's output)."""
        msg = result.result.get("msg") if msg is None else msg
        if self._display.verbosity >= 1 or not isinstance(msg, str) or not msg.strip():
            return None
        return msg

    def _login_user(self, host):
        """Who the run logs in as on host: ansible_user (or the play's remote_user), else what ssh uses, the
        controller's own user."""
        try:
            variables = self._play.get_variable_manager().get_vars(play=self._play, host=host)
        except Exception:  # only a name for a sentence: never let it hide the failure itself
            variables = {}
        for name in ("ansible_user", "ansible_ssh_user", "ansible_remote_user"):
            value = variables.get(name)
            if isinstance(value, str) and value and "{" not in value:
                return value
        remote = getattr(self._play, "remote_user", None)
        return remote if isinstance(remote, str) and remote else (C.DEFAULT_REMOTE_USER or getpass.getuser())

    def _print_failure(self, result, header, msg):
        """The header, then the message as written, each sentence on its own unwrapped line: a YAML or JSON
        dump would fold long sentences and escape quotes, and the exception block would print the same words
        again. Whatever else the result holds follows, dumped as the default does."""
        if self._last_task_banner != result.task._uuid:
            self._print_task_banner(result.task)
        self._handle_warnings(result.result)
        lines = [header] + ["  " + line for line in msg.strip().splitlines()]
        rest = {key: value for key, value in result.result.items() if key not in _SAID_BY_THE_MESSAGE}
        self._clean_results(rest, result.task.action)
        rest = {key: value for key, value in rest.items() if not key.startswith("_ansible")}
        if rest:
            lines.append(self._dump_results(rest))
        self._display.display(
            "\n".join(lines), color=C.COLOR_ERROR, stderr=self.get_option("display_failed_stderr")
        )

    def v2_runner_on_failed(self, result, ignore_errors=False):
        name = result._host.get_name()
        # A login user who cannot become root: the toolkit's sentence, in the row and printed (ARGS=-v
        # prints Ansible's own result as well).
        said = become_failure(result.result.get("msg"), name, self._login_user(result._host))
        if ignore_errors:
            self._finished(result)
        else:
            self._fleet.failed(
                name, result.task.get_name(), said or result.result.get("msg"), time.monotonic()
            )
        msg = self._as_written(result, said)
        if msg is None or (result.task.loop and "results" in result.result):
            super().v2_runner_on_failed(result, ignore_errors=ignore_errors)
            return
        self._print_failure(result, f"fatal: [{self.host_label(result)}]: FAILED!", msg)
        if ignore_errors:
            self._display.display("...ignoring", color=C.COLOR_SKIP)

    def v2_runner_item_on_failed(self, result):
        msg = self._as_written(result)
        if msg is None:
            super().v2_runner_item_on_failed(result)
            return
        self._print_failure(
            result, f"failed: [{self.host_label(result)}] (item={self._get_item_label(result.result)})", msg
        )

    def v2_playbook_on_no_hosts_remaining(self):
        """The recap names the failed hosts; a banner per remaining play adds nothing. A host that had not
        failed then was cut short (the fleet table says "stopped")."""
        self._fleet.cut_short = True

    def v2_playbook_on_stats(self, stats):
        super().v2_playbook_on_stats(stats)
        if len(self._fleet.hosts) > 1:
            self._display.display(self._fleet.table() + "\n")
        failed = {host for host in stats.processed if stats.failures.get(host) or stats.dark.get(host)}
        line = closing_summary(sorted(stats.processed), failed)
        # make verify's playbook only prepares the checks that follow it (mk/verify.mk sets this): "finished
        # without errors" there would read as the verdict just before the checks' own failures.
        if line and (failed or os.environ.get("SDENV_MORE_FOLLOWS") != "1"):
            self._display.display(line, color="red" if failed else "green")
