#!/usr/bin/python
"""Ansible module: the dummy admin account on macOS or Linux."""

DOCUMENTATION = r"""
module: dummy_account
short_description: Create, check for deletion, or delete the dummy admin account (macOS and Linux)
description:
  - >-
    C(present) creates the account with a home and admin rights (macOS sysadminctl + createhomedir and the
    admin group; Linux useradd with the sudo/wheel group) and sets its password on creation only. An existing
    account the provision record (I(record_path)) names gets its shell, full name and admin membership
    corrected; one it does not name is refused with a sentence saying what would change, unless I(adopt)
    (make ADOPT=yes); a system account (a shell that refuses logins, a home outside the home roots) is
    refused either way.
  - >-
    C(check) runs the safety checks of C(absent) (the account may be deleted; every path it would delete is
    on the allow-list) and fails with one sentence per refusal; it never changes anything.
  - >-
    C(absent) runs the same checks, stops the user's processes, deletes the account and its home, and
    removes what the provision record lists for it outside the home, each path only when the allow-list
    (removal_allowlist) admits it, and a WebUI or ComfyUI tree only when it is a directory the account owns
    (the toolkit clones them as the dummy; a link or another account's directory is not its clone). Anything else makes it refuse before deleting anything, FORCE or not.
    What another account in the record still uses (the models' stat cache and download locks) stays. With
    its processes stopped and before the account goes, the files its uid owns in /tmp and /var/tmp are
    deleted (never following a link); a shared uv cache directory it was given is handed back to root.
    When the account does not exist and the record has nothing for it, C(action=reset) refuses with a
    sentence saying so and C(action=remove) reports that there is nothing to remove.
  - >-
    The password is never put on a command line (chpasswd and dscl read it on standard input) nor into any
    file; the role's action plugin passes it over pipelining only. When none is given, the new account gets a
    random password that is set and then forgotten - nobody can log in with it until an administrator sets
    one (C(passwd), System Settings).
  - >-
    I(password_file) is where earlier versions kept a generated password in plain text. It is never read or
    written: C(present) names it in a warning while it exists, and C(absent) deletes it with the account
    whose password it held (reset recreates the account with a new one).
options:
  name: {description: Account name., type: str, required: true}
  fullname: {description: Full name., type: str, default: Dummy}
  shell: {description: Login shell., type: path, default: /bin/zsh}
  admin: {description: Member of the admin group (macOS) or sudo/wheel (Linux)., type: bool, default: true}
  password: {description: Password; empty means a random one that is never stored or shown., type: str, default: ''}
  password_file: {description: Where earlier versions kept a generated password (never read or written)., type: path}
  state: {description: What to do., type: str, choices: [present, check, absent], default: present}
  action:
    description: C(reset) (make reset-dummy, which recreates the account afterwards) or C(remove) (make
      remove-dummy); the words of every message.
    type: str
    choices: [reset, remove]
    default: reset
  record_path: {description: The provision record (for check and absent)., type: path}
  invoking_users: {description: Users running this command; never deleted., type: list, elements: str, default: []}
  force: {description: Delete an account the provision record does not name., type: bool, default: false}
  adopt: {description: C(present) takes over an existing account the record does not name., type: bool, default: false}
  console_probe_file:
    description: Test seam, Linux only. A utmp file for C(who) to read instead of the system's.
    type: path
"""

EXAMPLES = r"""
- name: The dummy admin account exists
  dummy_account:
    name: dummy
    fullname: Dummy
    shell: /bin/zsh
    password_file: /var/lib/sdenv/dummy.password
"""

RETURN = r"""
account: {description: The account after the call (name, uid, home, shell, admin)., type: dict, returned: success}
created: {description: The account was created by this call., type: bool, returned: state=present}
adopted: {description: An existing account the record did not name was taken over (adopt)., type: bool,
  returned: state=present}
adoption: {description: What adopting it changed, in words., type: str, returned: when adopted}
password_generated: {description: The account was created with a random password nobody knows., type: bool,
  returned: state=present}
removed_paths: {description: Paths removed for the account outside its home., type: list, returned: state=absent}
kept_paths: {description: "{path: account} the record lists for this account that another account still uses.",
  type: dict, returned: state=check or state=absent}
removed_temp_files: {description: What the account owned in /tmp and /var/tmp (deleted)., type: list,
  returned: state=absent}
returned_to_root: {description: Shared directories of the state directory given back to root., type: list,
  returned: state=absent}
nothing_to_remove: {description: The account does not exist and the record has nothing for it., type: bool,
  returned: state=absent}
"""

import os
import platform
import pwd
import shutil

from ansible.module_utils.account_leftovers import remove_files_owned_by
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dummy_accounts import (
    AccountError,
    backend_for,
    check_password,
    describe_changes,
    generate_password,
    record_names,
    system_account_reason,
    takeover_changes,
    takeover_refusal,
)
from ansible.module_utils.provision_record import RecordError, load
from ansible.module_utils.removal_allowlist import UV_CACHE_DIR, host_accounts
from ansible.module_utils.reset_guard import deletion_plan, reset_refusal, used_paths


def warn_about_an_old_password_file(module):
    """Earlier versions kept a generated password in plain text; it is never read or written any more."""
    path = module.params["password_file"]
    if path and os.path.lexists(path):
        module.warn(
            f"{path} holds a password in plain text, written by an earlier version of this toolkit, which no "
            "longer keeps passwords in files (nor reads this one): note it somewhere safe if you still need it, "
            "then delete the file (make reset-dummy and make remove-dummy delete it with the account)"
        )


def ensure_present(module, accounts):
    p = module.params
    account = accounts.get(p["name"])
    result = {"created": False, "password_generated": False, "adopted": False}
    if account is None:
        password, generated = p["password"], False
        if not password:
            # Kept nowhere: a copy in a file (however private) ends up in backups and snapshots of the disk.
            password, generated = generate_password(), True
        check_password(password)
        result.update(created=True, password_generated=generated)
        if module.check_mode:
            return dict(result, changed=True, account={"name": p["name"]})
        accounts.create(p["name"], p["fullname"], p["shell"], p["admin"])
        argv, data = accounts.password_command(p["name"], password)
        accounts.must(argv, data=data, what=f"Setting the password of {p['name']}")
        return dict(result, changed=True, account=accounts.get(p["name"]))
    system = system_account_reason(account, accounts.people_home_roots)
    if system:
        module.fail_json(
            msg=f"Refusing to make {p['name']} the dummy: {system}, so it is a system account (ADOPT=yes or not);"
            " set sdenv_user_name to another name."
        )
    recorded = load(p["record_path"])["users"].get(p["name"]) if p["record_path"] else None
    if not record_names(account, recorded):
        changes = takeover_changes(
            account, p["fullname"], p["shell"], accounts.admin_group() if p["admin"] else None
        )
        refusal = takeover_refusal(p["name"], account, recorded, changes, p["adopt"], p["record_path"])
        if refusal:
            module.fail_json(msg=refusal, refused=True)
        result.update(adopted=True, adoption=f"changed {describe_changes(changes)}")
    commands = accounts.modify_commands(account, p["fullname"], p["shell"], p["admin"])
    if commands and not module.check_mode:
        for argv in commands:
            accounts.must(argv, what=f"Updating the account {p['name']}")
        account = accounts.get(p["name"])
    return dict(result, changed=bool(commands), account=account)


def guard(module, accounts):
    """Run the account checks and the deletion plan; fail the module with the refusal, else return facts."""
    p = module.params
    account = accounts.get(p["name"])
    record = load(p["record_path"])
    recorded = record["users"].get(p["name"])
    refusal = reset_refusal(
        p["name"],
        account,
        accounts.first_regular_uid,
        p["invoking_users"],
        accounts.console_users(p["console_probe_file"]),
        recorded,
        p["force"],
        p["action"],
    )
    if refusal:
        module.fail_json(msg=refusal, refused=True)
    others = {name: entry for name, entry in record["users"].items() if name != p["name"]}
    plan, refusals, kept = deletion_plan(
        p["name"],
        p["action"],
        account,
        recorded,
        accounts.home_roots,
        p["record_path"],
        p["password_file"],
        accounts=host_accounts(),
        first_regular_uid=accounts.first_regular_uid,
        others=others,
    )
    if refusals:
        module.fail_json(
            msg=" ".join(refusals)
            + f" Nothing was changed; if the provision record {p['record_path']} is wrong, correct that entry"
            " by hand, then run again.",
            refused=True,
        )
    return account, recorded, plan, kept


def delete_path(path):
    """Delete a file, a link (never what it points to) or a directory tree; False when it is not there."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    else:
        return False
    return True


def uid_shared_with_another_account(account):
    return any(e.pw_uid == account["uid"] and e.pw_name != account["name"] for e in pwd.getpwall())


def give_shared_uv_cache_to_root(module, uid):
    """<state dir>/uv-cache holds every account's uv cache: earlier versions made it the first dummy's (the
    file module gives the parents it creates the owner it was asked for), so a deleted dummy's uid kept it.
    Root's again, never following a link."""
    shared = os.path.join(os.path.dirname(os.path.abspath(module.params["record_path"])), UV_CACHE_DIR)
    try:
        info = os.lstat(shared)
    except OSError:
        return []
    if not os.path.isdir(shared) or os.path.islink(shared) or info.st_uid != uid:
        return []
    os.lchown(shared, 0, info.st_gid)
    return [shared]


def ensure_absent(module, accounts):
    account, recorded, plan, kept = guard(module, accounts)
    result = {"account": account, "kept_paths": kept, "removed_temp_files": [], "returned_to_root": []}
    if account is None and recorded is None:
        return dict(result, changed=False, removed_paths=[], nothing_to_remove=True)
    if module.check_mode:
        return dict(result, changed=True, removed_paths=plan, nothing_to_remove=False)
    if account is not None:
        accounts.stop_processes(account)
        result["returned_to_root"] = give_shared_uv_cache_to_root(module, account["uid"])
        # While the account still holds its uid (no new account can be given it yet) and its processes
        # are stopped: torch's and uv's temp files would otherwise outlive it, owned by a dead uid. The
        # state directory, the places its record entry names (a uv cache or WebUI tree set under /tmp is the
        # plan's to delete or keep, not the sweep's) and what others still use are not swept.
        if not uid_shared_with_another_account(account):
            state_dir = os.path.dirname(os.path.abspath(module.params["record_path"]))
            keep = [state_dir, *used_paths(recorded), *kept]
            result["removed_temp_files"] = remove_files_owned_by(account["uid"], keep=keep)
        accounts.delete(account, remove_home=os.path.isdir(account["home"]))
        if os.path.lexists(account["home"]):
            delete_path(account["home"])  # on the allow-list (checked above); the system tool left it
    removed = [path for path in plan if delete_path(path)]
    return dict(
        result,
        changed=account is not None or bool(removed),
        removed_paths=removed,
        nothing_to_remove=False,
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "fullname": {"type": "str", "default": "Dummy"},
            "shell": {"type": "path", "default": "/bin/zsh"},
            "admin": {"type": "bool", "default": True},
            "password": {"type": "str", "default": "", "no_log": True},
            "password_file": {"type": "path", "no_log": False},
            "state": {"type": "str", "choices": ["present", "check", "absent"], "default": "present"},
            "action": {"type": "str", "choices": ["reset", "remove"], "default": "reset"},
            "record_path": {"type": "path"},
            "invoking_users": {"type": "list", "elements": "str", "default": []},
            "force": {"type": "bool", "default": False},
            "adopt": {"type": "bool", "default": False},
            "console_probe_file": {"type": "path"},
        },
        required_if=[("state", "check", ["record_path"]), ("state", "absent", ["record_path"])],
        supports_check_mode=True,
    )

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    try:
        accounts = backend_for(platform.system(), run)
        if module.params["state"] == "present":
            warn_about_an_old_password_file(module)
            result = ensure_present(module, accounts)
        elif module.params["state"] == "check":
            account, recorded, plan, kept = guard(module, accounts)
            result = {
                "changed": False,
                "account": account,
                "removed_paths": plan,
                "kept_paths": kept,
                "nothing_to_remove": account is None and recorded is None,
            }
        else:
            result = ensure_absent(module, accounts)
    except (AccountError, RecordError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
