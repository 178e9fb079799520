# make verify, step 1 (playbooks/verify.yml): resolve every sdenv_ variable of this host, exactly as the
# play sees it (group_vars, host vars, the derived values of the roles provision runs, facts, -e), and write
# them with the facts the suite needs to one JSON file per host on the controller, for the testinfra suite
# (step 2).
#
# The roles' values (`roles`: their defaults/main.yml and vars/main.yml) are read here, with Ansible's
# precedence (defaults below everything, role vars above all but -e), instead of importing the roles into
# the play with `when: false`: that parsed every task file of six roles (~60 tasks) for a play that runs none.
#
# On the controller, in the worker that runs this task: no module goes to the host. It does what a set_fact
# loop over `query('ansible.builtin.varnames', '^sdenv_')` and a copy delegated to localhost did, without a
# task per variable (each a fork and a templating pass: ~2 s for ~200 variables) and without a module round
# trip to write a controller-side file (~1 s).
#
# One variable at a time: a value that needs a provision-time result (a registered variable, a lock entry a
# role has not added yet) resolves to null instead of failing the others. Secrets never leave Ansible: a
# name matching `leave_out` (password, token, ...) is not written.
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.json import get_encoder
from ansible.plugins.action import ActionBase
from ansible.utils.vars import load_extra_vars

# The toolkit's one atomic write, imported as the other controller-side plugins import module_utils.
_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.append(_MODULE_UTILS)

from sdenv_atomic import write_bytes_atomic  # noqa: E402


def resolve_all(names, resolve):
    """{name: resolve(name)} for every name, None for one that fails to resolve (the others still do)."""
    resolved = {}
    for name in names:
        try:
            resolved[name] = resolve(name)
        except (AnsibleError, TypeError, ValueError):  # TypeError, ValueError: not data JSON can hold
            resolved[name] = None
    return resolved


def with_role_values(task_vars, defaults, role_vars, extra_vars):
    """The variables the play would see with the roles imported: a role default only where nothing else
    sets the name, a role var over everything but -e (extra_vars)."""
    merged = {**defaults, **task_vars}
    merged.update({k: v for k, v in role_vars.items() if k not in extra_vars})
    return merged


def verify_names(names, leave_out):
    """The sdenv_ variables the suite gets: never a secret (`leave_out` searched in the name), never this
    step's own working values (sdenv_verify_out, sdenv_verify_secret_pattern)."""
    secret = re.compile(leave_out)
    own = re.compile(r"^sdenv_verify_(resolved|out|secret)")
    return sorted(
        name
        for name in names
        if name.startswith("sdenv_") and not secret.search(name) and not own.match(name)
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    # The file is the controller's report of this run, not a change to a host: written in check mode too.
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        dest = self._task.args.get("dest")
        if not dest:
            return {**result, "failed": True, "msg": "sdenv_verify_vars needs dest (the JSON file to write)."}
        defaults, role_vars = {}, {}
        for role in self._task.args.get("roles") or []:
            defaults.update(self._role_file(role, "defaults"))
            role_vars.update(self._role_file(role, "vars"))
        task_vars = with_role_values(task_vars, defaults, role_vars, load_extra_vars(self._loader))
        names = verify_names(task_vars, self._task.args.get("leave_out", "(password|token|secret|vault)"))
        templar = self._templar.copy_with_new_env(available_variables=task_vars)
        encoder = get_encoder("tagless")

        def resolve(name):
            # Rendered through JSON here, inside the per-variable error handling: a nested value that fails to
            # resolve fails this variable alone, and the document below holds plain data only.
            return json.loads(json.dumps(templar.template(task_vars[name]), cls=encoder))

        resolved = resolve_all(names, resolve)
        document = {
            "inventory_hostname": task_vars.get("inventory_hostname"),
            "facts": self._task.args.get("facts") or {},
            "vars": resolved,
        }
        text = json.dumps(document, cls=encoder, indent=4, sort_keys=True, separators=(",", ": "))
        write_bytes_atomic(dest, text.encode("utf-8"), mode=0o600)
        return {**result, "changed": False, "dest": dest, "count": len(resolved)}

    def _role_file(self, role, kind):
        """The role's {kind}/main.yml as data ({} when it has none), found on the configured roles path; trusted
        as templates, as Ansible trusts a role's own files."""
        for directory in C.DEFAULT_ROLES_PATH:
            if Path(directory, role, "meta").is_dir() or Path(directory, role, "tasks").is_dir():
                path = Path(directory, role, kind, "main.yml")
                return (
                    (self._loader.load_from_file(str(path), trusted_as_template=True) or {})
                    if path.is_file()
                    else {}
                )
        raise AnsibleError(
            f"sdenv_verify_vars: no role {role} on the roles path ({', '.join(C.DEFAULT_ROLES_PATH)})."
        )
