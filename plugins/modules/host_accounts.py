#!/usr/bin/python
"""Ansible module: read the host's accounts for the preflight; it changes nothing."""

DOCUMENTATION = r"""
module: host_accounts
short_description: Read the host's accounts and the settings that decide a new account's uid and home
description:
  - Returns every account the host's user database lists (name, uid, home) through getpwall(3), which
    reads /etc/passwd on Linux and Open Directory on macOS; and, on Linux, the UID_MIN lines of
    /etc/login.defs and the HOME line of /etc/default/useradd (where useradd puts a new home).
  - Only reads. The preflight (action sdenv_preflight) runs it before any task that changes the host.
options: {}
"""

EXAMPLES = r"""
- name: Read the accounts
  host_accounts:
  register: accounts
"""

RETURN = r"""
accounts:
  description: "[{name, uid, home}] for every account."
  type: list
  returned: always
login_defs:
  description: The UID_MIN line(s) of /etc/login.defs, or null when the file does not exist (macOS).
  type: str
  returned: always
useradd_home:
  description: HOME from /etc/default/useradd (the parent of new homes), or null.
  type: str
  returned: always
"""

import pwd

from ansible.module_utils.basic import AnsibleModule


def read_lines(path, prefix):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(line for line in handle if line.lstrip().startswith(prefix))
    except OSError:
        return None


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    accounts = [{"name": e.pw_name, "uid": e.pw_uid, "home": e.pw_dir} for e in pwd.getpwall()]
    home_line = read_lines("/etc/default/useradd", "HOME=")
    home = home_line.strip().splitlines()[-1].partition("=")[2].strip().strip("\"'") if home_line else None
    module.exit_json(
        changed=False,
        accounts=accounts,
        login_defs=read_lines("/etc/login.defs", "UID_MIN"),
        useradd_home=home or None,
    )


if __name__ == "__main__":
    main()
