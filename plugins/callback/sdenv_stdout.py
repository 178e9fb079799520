"""The toolkit's screen output: Ansible's default callback without its noise.

What a user reads when a run stops should be the sentence that says why, once. Ansible's default callback
prints a failed task three times over (the exception with its origin and a source excerpt, then the same
message again in the result dump) and a "NO MORE HOSTS LEFT" banner per play after the failure. This
callback keeps everything else of the default (it subclasses it, so its options and behaviour carry over)
and, below verbosity 1 (`ARGS=-v` shows them again):
- prints a failure's message once: the exception block is dropped when the result carries a `msg` (the
  toolkit's modules and checks put their sentence there; a crash with no `msg` still shows its traceback);
- prints no "NO MORE HOSTS LEFT" banner (the recap that follows says which hosts failed);
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

import sys
from pathlib import Path

from ansible.plugins.callback.default import CallbackModule as DefaultCallback

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.append(_MODULE_UTILS)

from sdenv_i18n import ngettext


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


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "sdenv_stdout"

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self._display.verbosity < 1 and result.result.get("msg"):
            # The message is printed in the result dump below; the exception would repeat it.
            result.result.pop("exception", None)
        super().v2_runner_on_failed(result, ignore_errors=ignore_errors)

    def v2_runner_item_on_failed(self, result):
        if self._display.verbosity < 1 and result.result.get("msg"):
            result.result.pop("exception", None)
        super().v2_runner_item_on_failed(result)

    def v2_playbook_on_no_hosts_remaining(self):
        """The recap names the failed hosts; a banner per remaining play adds nothing."""

    def v2_playbook_on_stats(self, stats):
        super().v2_playbook_on_stats(stats)
        failed = {host for host in stats.processed if stats.failures.get(host) or stats.dark.get(host)}
        line = closing_summary(sorted(stats.processed), failed)
        if line:
            self._display.display(line, color="red" if failed else "green")
