# dummy_account takes the account's password as a module argument: it runs over pipelining only, so the
# password never sits in a module file on the host (plugins/action/sdenv_secret_module.py says how and why).
from __future__ import annotations

from ansible.plugins.loader import action_loader

SecretModuleAction = action_loader.get("sdenv_secret_module", class_only=True)
if SecretModuleAction is None:  # ansible.cfg's action_plugins names plugins/action, where it lives
    raise ImportError(
        "the sdenv_secret_module action (plugins/action) is not on Ansible's action plugin path"
    )


class ActionModule(SecretModuleAction):
    SECRET_ARGS = ("password",)
