"""The toolkit's screen output: Ansible's default callback without its noise.

What a user reads when a run stops should be the sentence that says why, once. Ansible's default callback
prints a failed task three times over (the exception with its origin and a source excerpt, then the same
message again in the result dump) and a "NO MORE HOSTS LEFT" banner per play after the failure. This
callback keeps everything else of the default (it subclasses it, so its options and behaviour carry over)
and, below verbosity 1 (`ARGS=-v` shows them again):
- prints a failure's message once: the exception block is dropped when the result carries a `msg` (the
  toolkit's modules and checks put their sentence there; a crash with no `msg` still shows its traceback);
- prints no "NO MORE HOSTS LEFT" banner (the recap that follows says which hosts failed).
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

from ansible.plugins.callback.default import CallbackModule as DefaultCallback


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
