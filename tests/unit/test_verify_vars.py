"""make verify's step 1 (plugins/action/sdenv_verify_vars.py): every sdenv_ variable of a host resolved as the
play sees it, the named roles' derived values included with Ansible's precedence (no role imported into the
play), and written to the controller in one controller-side task; a variable that cannot be resolved is null
without failing the others; secrets are never written."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- hosts: all
  gather_facts: false
  vars:
    sdenv_from_play: "{{ sdenv_base }}-play"
  tasks:
    - name: Write the resolved variables
      sdenv_verify_vars:
        dest: "{{ out }}"
        roles: [fixture_role]
        leave_out: "(password|token|secret|vault)"
        facts: {system: Linux, python: /usr/bin/python3}
"""

INVENTORY = """
all:
  hosts:
    h1:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
      sdenv_base: base
      sdenv_derived: "{{ sdenv_base }}-derived"
      sdenv_nested: {key: "{{ sdenv_base }}", items: ["{{ sdenv_base }}", 2]}
      sdenv_needs_a_run: "{{ sdenv_registered.stdout }}"
      sdenv_user_password: hunter2
      sdenv_civitai_token: t0ken
      sdenv_verify_out: /nowhere
      sdenv_role_default_overridden: from-inventory
      sdenv_role_const: inventory-loses
      other_variable: not mine
"""


def test_every_variable_is_resolved_and_written_once_without_secrets(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    role = tmp_path / "roles" / "fixture_role"
    for kind, text in {
        "tasks": "- name: Never run here\n  ansible.builtin.fail:\n",
        "defaults": "sdenv_role_default: '{{ sdenv_base }}/from-role'\nsdenv_role_default_overridden: no\n"
        "sdenv_role_const_seen: '{{ sdenv_role_const }}'\n",
        "vars": "sdenv_role_const: role-wins\nsdenv_role_const_e: role-loses-to-e\n",
    }.items():
        (role / kind).mkdir(parents=True)
        (role / kind / "main.yml").write_text("---\n" + text)
    out = tmp_path / "vars" / "h1.json"
    out.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")} | {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(tmp_path / "roles"),
    }
    ran = subprocess.run(
        [Path(sys.executable).parent / "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e",
         f"out={out}", "-e", "sdenv_role_const_e=from-e", str(tmp_path / "play.yml")],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    doc = json.loads(out.read_text())
    assert doc["inventory_hostname"] == "h1"
    assert doc["facts"] == {"system": "Linux", "python": "/usr/bin/python3"}
    assert doc["vars"] == {
        "sdenv_base": "base",
        "sdenv_derived": "base-derived",
        "sdenv_from_play": "base-play",
        "sdenv_nested": {"key": "base", "items": ["base", 2]},
        "sdenv_needs_a_run": None,  # a provision-time result: null, and the others still resolve
        # The role's values as an imported role gives them: defaults lowest, its vars over the inventory but
        # not over -e, and templated against everything.
        "sdenv_role_default": "base/from-role",
        "sdenv_role_default_overridden": "from-inventory",
        "sdenv_role_const": "role-wins",
        "sdenv_role_const_seen": "role-wins",
        "sdenv_role_const_e": "from-e",
    }
    assert "hunter2" not in out.read_text() and "t0ken" not in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["h1.json"], "a temporary file was left behind"
    # One task on the controller: no task per variable, no module sent to the host, no role task parsed in.
    assert ran.stdout.count("TASK [") == 1, ran.stdout
