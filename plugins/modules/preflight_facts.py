#!/usr/bin/python
"""Ansible module: what the preflight needs to know about a host, in one module run; it changes nothing."""

DOCUMENTATION = r"""
module: preflight_facts
short_description: The host facts the settings are made from, and the host's accounts, for the preflight
description:
  - >-
    Gathers the facts the settings and the roles' defaults are made from (platform, distribution, user,
    python - Ansible's own fact collectors, exactly as M(ansible.builtin.setup) runs them, returned as
    C(ansible_facts)), so the preflight needs one module run and no separate fact gathering. Not the
    environment (it may hold the tokens and the password, and no setting is made from it).
  - >-
    Returns every account the host's user database lists (name, uid, home, shell, full name and group
    names) through getpwall(3) and getgrall(3), which read /etc/passwd and /etc/group on Linux and Open
    Directory on macOS; and, on Linux, the UID_MIN lines of /etc/login.defs and the HOME line of
    /etc/default/useradd (where useradd puts a new home).
  - >-
    With I(ports), also says which of those ports something already listens on at 127.0.0.1 (a bind test
    with SO_REUSEADDR, as the WebUI's server makes it, so a closing connection does not count); the preflight
    asks it for make run, whose WebUI would otherwise find its port taken, or take another program's answer
    for its own.
  - >-
    With I(record), also returns the provision record's entry for that user when the account exists (the
    dummy_user rules need it), so the preflight reads the record in the same run.
  - >-
    With I(paths), says for each where it resolves to and the first symbolic link on the way that another
    account could change (the toolkit, as root, follows none; see sdenv_atomic), for the preflight to judge.
  - >-
    Only reads, but for the run lock (I(lock)). The preflight (action sdenv_preflight) runs it once per host
    before any task that changes the host: it sends the paths, ports and record it expects from the facts of the host's previous run, and asks
    again only when this run's facts lead to other ones.
options:
  ports: {description: Loopback ports to test., type: list, elements: int, default: []}
  record:
    description: "{path, user}: the provision record and the dummy whose entry to return."
    type: dict
  sources:
    description: The sources the target will fetch (sdenv_reach.needed_sources); each is probed unless the host
      has it already, and C(unreachable) says which do not answer.
    type: list
    elements: dict
    default: []
  environment: {description: The proxy and CA variables for the probes., type: dict, default: {}}
  facts:
    description: Gather the facts and read the accounts (false for a second look at paths, ports, record).
    type: bool
    default: true
  paths:
    description: Absolute paths (the state directory, the WebUI directory) to resolve; nothing else is read.
    type: list
    elements: str
    default: []
  lock:
    description: >-
      For a target that changes the host - {state_dir, target, token, controller, controller_pid, local}, as
      M(sdenv_run_lock) takes them: the run lock is taken in this same run, last, when it is free (or this
      run's already); when another run holds it, nothing is taken or waited for and C(run_lock) names the
      holder (the preflight waits with M(sdenv_run_lock) once its checks have passed). The one thing this
      module changes, and no state of the host (never C(changed)).
    type: dict
"""

EXAMPLES = r"""
- name: Read what the preflight needs
  preflight_facts:
  register: host
"""

RETURN = r"""
ansible_facts:
  description: The platform, distribution, user and python facts, as setup returns them.
  type: dict
  returned: always
accounts:
  description: "[{name, uid, home, shell, fullname, groups}] for every account."
  type: list
  returned: always
login_defs:
  description: The UID_MIN line(s) of /etc/login.defs, or null when the file does not exist (macOS).
  type: str
  returned: always
useradd_defaults:
  description: The HOME line(s) of /etc/default/useradd (the parent of new homes), or null.
  type: str
  returned: always
ports_in_use:
  description: The ports of I(ports) something listens on.
  type: list
  returned: always
unreachable:
  description: One sentence per source of I(sources) that does not answer (empty when all do).
  type: list
  returned: always
checked: {description: How many of I(sources) were probed (the others are on the host already)., type: int}
dummy_record:
  description: "{path, entry} for I(record) when its user exists (entry null when the record cannot be read)."
  type: dict
  returned: when record is given
admin_group:
  description: The group that gives admin rights here (admin on macOS, else the first of sudo, wheel, admin).
  type: str
run_lock:
  description: "With I(lock): {lock (acquired, ours, busy or error), holder, notes, helper_pid, helper_start,
    local, msg}."
  type: dict
  returned: when lock is given
places:
  description: "{path: {resolved, link}} for each of I(paths): its real path (realpath(3)) and the first link
    on the way another account could change (null when none)."
  type: dict
  returned: always
"""

import errno
import grp
import os
import platform
import pwd
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts import ansible_collector, default_collectors
from ansible.module_utils.facts.namespace import PrefixFactNamespace
from ansible.module_utils.provision_record import RecordError, ensure_state_dir, load
from ansible.module_utils.sdenv_atomic import LinkRefused, open_dir_nofollow
from ansible.module_utils.sdenv_reach import already_here, unreachable_sentences
from ansible.module_utils.sdenv_run_lock import RunLockError, take_for_run

# Cheap collectors (no subprocess but uname and the distribution's release files): every fact the shipped
# settings and the roles' defaults are made from (system, architecture, machine, os_family, ...).
FACTS = frozenset(["platform", "distribution", "user", "python"])


def read_lines(path, prefix):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(line for line in handle if line.lstrip().startswith(prefix))
    except OSError:
        return None


def group_names():
    """{account name: [its group names]}, the primary group first (as `id -Gn` lists them)."""
    groups = grp.getgrall()
    by_gid = {g.gr_gid: g.gr_name for g in groups}
    members = {}
    for group in groups:
        for name in group.gr_mem:
            members.setdefault(name, []).append(group.gr_name)
    return by_gid, members


def account_entry(entry, by_gid, members):
    primary = by_gid.get(entry.pw_gid)
    groups = ([primary] if primary else []) + [g for g in members.get(entry.pw_name, []) if g != primary]
    return {
        "name": entry.pw_name,
        "uid": entry.pw_uid,
        "home": entry.pw_dir,
        "shell": entry.pw_shell,
        "fullname": entry.pw_gecos.split(",")[0],
        "groups": groups,
    }


def in_use(port):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        return error.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def place(path):
    """Where `path` resolves to, and the first link on the way root must not follow (the existing part of
    the path is walked exactly as the roles' writes walk it)."""
    existing = path
    while True:
        try:
            os.close(open_dir_nofollow(existing))
            link = None
        except LinkRefused as exc:
            link = exc.filename
        except FileNotFoundError:
            if existing != "/":
                existing = os.path.dirname(existing)
                continue
            link = None
        except OSError:  # not a directory, or unreadable: the roles say so in their own words
            link = None
        return {"resolved": os.path.realpath(path), "link": link}


def dummy_record(path, user):
    """The record's entry for an existing account ({} when the record names nothing; entry None when it
    cannot be read, as an unprivileged login may not: the role checks as root); None for no such account."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        entry = (load(path).get("users") or {}).get(user) or {}
    except (RecordError, OSError):
        entry = None
    return {"path": path, "entry": entry}


def run_lock(lock):
    """The run lock taken now when nobody else has it (preflight_facts' one change); never a wait."""
    try:
        return take_for_run(
            lock, 0, prepare=lambda: ensure_state_dir(lock["state_dir"])[1] is None, wait=False
        )
    except (RunLockError, OSError, KeyError, TypeError) as exc:
        return {"lock": "error", "msg": str(exc)}


def main():
    module = AnsibleModule(
        argument_spec={
            "ports": {"type": "list", "elements": "int", "default": []},
            "paths": {"type": "list", "elements": "str", "default": []},
            "record": {"type": "dict"},
            "sources": {"type": "list", "elements": "dict", "default": []},
            "environment": {"type": "dict", "default": {}, "no_log": True},
            "facts": {"type": "bool", "default": True},
            "lock": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {
        "changed": False,
        "places": {path: place(path) for path in p["paths"] if os.path.isabs(path)},
        "ports_in_use": [port for port in p["ports"] if in_use(port)],
    }
    if p["record"] and p["record"].get("path") and p["record"].get("user"):
        result["dummy_record"] = dummy_record(p["record"]["path"], p["record"]["user"])
    if p["sources"]:
        environ = {**os.environ, **{k: str(v) for k, v in p["environment"].items()}}
        result["checked"] = sum(1 for source in p["sources"] if not already_here(source, environ))
        result["unreachable"] = unreachable_sentences(p["sources"], environ)
    if not p["facts"]:
        if p["lock"] and not module.check_mode:
            result["run_lock"] = run_lock(p["lock"])
        module.exit_json(**result)
    collector = ansible_collector.get_ansible_collector(
        all_collector_classes=default_collectors.collectors,
        namespace=PrefixFactNamespace(namespace_name="ansible", prefix="ansible_"),
        filter_spec=[],
        gather_subset=["!all"],
        gather_timeout=10,
        minimal_gather_subset=FACTS,
    )
    by_gid, members = group_names()
    accounts = [account_entry(e, by_gid, members) for e in pwd.getpwall()]
    # The group dummy_accounts gives admin rights through (LinuxAccounts.admin_group, DarwinAccounts).
    names = set(by_gid.values())
    admin = next((g for g in ("sudo", "wheel", "admin") if g in names), None)
    admin = "admin" if platform.system() == "Darwin" else admin
    result.update(
        ansible_facts=collector.collect(module=module),
        accounts=accounts,
        login_defs=read_lines("/etc/login.defs", "UID_MIN"),
        useradd_defaults=read_lines("/etc/default/useradd", "HOME="),
        admin_group=admin,
    )
    if p["lock"] and not module.check_mode:  # last: a run that failed before it holds no lock
        result["run_lock"] = run_lock(p["lock"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
