#!/usr/bin/python
"""Ansible module: choose the WebUI's Python by running each candidate (read-only)."""

DOCUMENTATION = r"""
module: python_interpreter
short_description: Choose a Python for the WebUI by running each candidate and checking its version
description:
  - Runs each candidate in order with a probe that prints its version and imports C(ensurepip) and C(venv);
    a name on PATH that fails to run (a pyenv shim, the macOS Command Line Tools stub) is rejected with the reason.
  - The first candidate with C(minimum <= version < below) that can create virtual environments wins.
    When its version is not I(preferred), the module warns, giving I(why).
  - Read-only. Run it as the user who will use the interpreter (C(become_user)), so "usable" means usable by them.
options:
  candidates: {description: Absolute paths or names looked up on PATH, in order of preference., type: list,
    elements: str, required: true}
  preferred: {description: The version wanted (major.minor)., type: str, default: "3.10"}
  minimum: {description: Lowest accepted major.minor., type: str, default: "3.10"}
  below: {description: First major.minor not accepted., type: str, default: "3.12"}
  why: {description: Why a non-preferred version is acceptable and what the bounds protect (for the warning).,
    type: str, default: ""}
  context: {description: Why the preferred version may be missing here (for the warning)., type: str, default: ""}
  allow_missing:
    description: Return C(path=null) instead of failing when nothing is usable (check mode before installation).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Choose the WebUI's Python
  python_interpreter:
    candidates: [python3.10, /usr/bin/python3.11]
    why: WebUI v1.10.1 is tested on 3.10 and its torch pins have no 3.12 wheels
  become: true
  become_user: dummy
"""

RETURN = r"""
path: {description: The chosen interpreter (null when allow_missing and none is usable)., type: str, returned: always}
version: {description: Its full version (e.g. 3.11.2)., type: str, returned: always}
preferred: {description: The chosen version is the preferred one., type: bool, returned: always}
rejected: {description: Candidates tried and why each was rejected., type: list, returned: always}
warning: {description: The fallback warning (empty when the preferred version was found)., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.python_resolution import ResolutionError, parse_version, resolve


def main():
    module = AnsibleModule(
        argument_spec={
            "candidates": {"type": "list", "elements": "str", "required": True},
            "preferred": {"type": "str", "default": "3.10"},
            "minimum": {"type": "str", "default": "3.10"},
            "below": {"type": "str", "default": "3.12"},
            "why": {"type": "str", "default": ""},
            "context": {"type": "str", "default": ""},
            "allow_missing": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    bounds = {}
    for key in ("preferred", "minimum", "below"):
        version = parse_version(p[key])
        if version is None or len(version) != 2:
            module.fail_json(
                msg=f"{key}={p[key]!r} is not a major.minor version such as 3.10: fix the role's vars."
            )
        bounds[key] = version
    try:
        result = resolve(p["candidates"], module.run_command, why=p["why"], context=p["context"], **bounds)
    except ResolutionError as exc:
        if not p["allow_missing"]:
            module.fail_json(msg=str(exc))
        module.exit_json(
            changed=False, path=None, version=None, preferred=False, rejected=[], warning=str(exc)
        )
    if result["warning"]:
        module.warn(result["warning"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
