"""Create, inspect and delete the dummy account on macOS and Linux.

Command lines are built and outputs parsed here, in plain Python, so unit tests check them against
recorded macOS outputs. A backend runs commands through a `run(argv, data=None) -> (rc, out, err)`
callable: AnsibleModule.run_command in the module, a recorder in tests.

Secrets never go on a command line: Linux sets the password through chpasswd's standard input, macOS
through dscl's interactive mode on standard input (`dscl .` reading `passwd /Users/NAME "PW"`), because
process arguments are visible to every local user.
"""

import re
import secrets

try:
    from ansible.module_utils.removal_allowlist import HOME_ROOTS
except ImportError:  # unit tests import module_utils directly
    from removal_allowlist import HOME_ROOTS

PASSWORD_FORBIDDEN = re.compile(r"[\s\"'\\]")


class AccountError(Exception):
    """A step that failed; the message is one sentence saying what and what to do."""


def generate_password():
    # token_urlsafe uses [A-Za-z0-9_-]: nothing that needs quoting for dscl or chpasswd.
    return secrets.token_urlsafe(18)


def check_password(password):
    if not password:
        raise AccountError(
            "The dummy password is empty: set it in ansible-vault or the environment variable."
        )
    if PASSWORD_FORBIDDEN.search(password) or ":" in password:
        raise AccountError(
            "The dummy password contains white space, a quote, a backslash or a colon, which cannot be passed"
            " safely to dscl/chpasswd: choose one without them."
        )


# --- Taking over an existing account ----------------------------------------------------------------

# Shells that refuse a login: an account with one is a service's, whatever its uid.
NO_LOGIN_SHELLS = ("nologin", "false")


def system_account_reason(account, home_roots):
    """Why `account` is a system account whatever its uid (nobody, _apt), in words, or None.

    A person's account logs in and lives under a home root (/home, /Users); a service's has a shell that
    refuses logins or a home elsewhere (/nonexistent, /var/lib/...). Neither is ever the dummy, ADOPT or not.
    """
    shell = account.get("shell") or ""
    if shell.rstrip("/").rpartition("/")[2] in NO_LOGIN_SHELLS:
        return f"its shell {shell} refuses logins"
    home = account.get("home") or ""
    if not any(home.startswith(root.rstrip("/") + "/") for root in home_roots):
        return f"its home {home or '(none)'} is outside {' and '.join(home_roots)}"
    return None


def takeover_changes(account, fullname, shell, admin_group):
    """What provisioning would change on an existing account: [(what, old, new)], in the order shown."""
    changes = []
    if account.get("shell") != shell:
        changes.append(("shell", account.get("shell") or "(none)", shell))
    if account.get("fullname") != fullname:
        changes.append(("full name", repr(account.get("fullname") or ""), repr(fullname)))
    groups = list(account.get("groups") or [])
    if admin_group and admin_group not in groups:
        changes.append(("groups", ",".join(groups) or "(none)", ",".join([*groups, admin_group])))
    return changes


def describe_changes(changes):
    """takeover_changes in words: "shell /bin/bash → /bin/zsh; full name 'A' → 'Dummy'"."""
    return "; ".join(f"{item} {old} → {new}" for item, old, new in changes) or "nothing about it"


def record_names(account, recorded):
    """The provision record's entry is this very account (same uid when the record kept one)."""
    return bool(recorded) and recorded.get("uid") in (None, account["uid"])


def takeover_refusal(name, account, recorded, changes, adopt, record_path):
    """Why provisioning may not use the existing `account` as the dummy, or None (one sentence).

    An account the provision record does not name is someone's: provisioning it would change what
    `changes` lists and make it the toolkit's dummy. ADOPT=yes says that is meant.
    """
    if record_names(account, recorded) or adopt:
        return None
    what = describe_changes(changes)
    return (
        f"The account {name} already exists (uid {account['uid']}) and the provision record {record_path} does not"
        f" name it, so provisioning would take it over and change {what}: run with ADOPT=yes to adopt it"
        " (reset-dummy and remove-dummy then delete it and its home only with FORCE=yes), or set sdenv_user_name to"
        " a new name."
    )


# --- Parsers -------------------------------------------------------------------------------------


def parse_getent_passwd(text):
    """`getent passwd NAME` -> dict, or None when the output is empty."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line:
        return None
    fields = line.split(":")
    if len(fields) != 7:
        raise AccountError(f"Unexpected getent output: {line!r}.")
    return {
        "name": fields[0],
        "uid": int(fields[2]),
        "gid": int(fields[3]),
        "fullname": fields[4].split(",")[0],
        "home": fields[5],
        "shell": fields[6],
    }


def parse_dscl_read(text):
    """`dscl . -read /Users/NAME KEY...` -> {key: value}.

    dscl prints `Key: value` on one line, or `Key:` followed by indented continuation lines when the
    value has spaces (RealName), one value per line for multi-valued keys (joined with a space).
    """
    values = {}
    key = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw.startswith(" ") and key:
            values[key] = (values[key] + " " + raw.strip()).strip()
            continue
        key, _, rest = raw.partition(":")
        key = key.strip()
        values[key] = rest.strip()
    return values


def parse_checkmember(text):
    """`dseditgroup -o checkmember -m NAME admin` -> True when it says `yes NAME is a member of admin`."""
    return text.strip().startswith("yes ")


def parse_useradd_home(text):
    """HOME= of /etc/default/useradd (where useradd puts new homes), or None."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("HOME=")]
    return (lines[-1].partition("=")[2].strip().strip("\"'") or None) if lines else None


def parse_login_defs_uid_min(text, default=1000):
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
            return int(fields[1])
    return default


def parse_who_console(text):
    """Users logged in at a console per `who`: text terminals (tty1, console) and X displays (:0).

    SSH and terminal-emulator sessions (pts/N) are not console logins.
    """
    users = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and re.match(r"^(tty\d+|console|:\d+(\.\d+)?|seat\d+)$", fields[1]):
            users.add(fields[0])
    return users


def parse_console_owner(text):
    """`stat -f %Su /dev/console` on macOS: the user at the console; root means the login window."""
    name = text.strip()
    return set() if name in ("", "root", "loginwindow") else {name}


# --- Backends ------------------------------------------------------------------------------------


class Accounts:
    """What both platforms share: the flow; the subclasses say how."""

    platform = None
    first_regular_uid = 1000

    @property
    def home_roots(self):
        """Where homes live here: the only place reset deletes a home (removal_allowlist)."""
        return HOME_ROOTS[self.platform]

    @property
    def people_home_roots(self):
        """Where people's homes live here: the home roots and wherever the system puts new homes."""
        return self.home_roots

    def __init__(self, run):
        self.run = run

    def must(self, argv, data=None, what=None):
        rc, out, err = self.run(argv, data=data)
        if rc != 0:
            detail = (err or out).strip().splitlines()
            raise AccountError(
                f"{what or argv[0]} failed (exit {rc}): {detail[-1] if detail else 'no output'}."
            )
        return out

    def create(self, name, fullname, shell, admin):
        for argv in self.create_commands(name, fullname, shell, admin):
            self.must(argv, what=f"Creating the account {name} ({argv[0]})")
        if self.get(name) is None:
            raise AccountError(f"The account {name} does not exist after creating it: see the system log.")

    def stop_processes(self, account):
        for argv in self.stop_commands(account):
            # Exit 1 from pkill means "nothing matched": the goal is reached either way.
            self.run(argv)

    def delete(self, account, remove_home=True):
        for argv in self.delete_commands(account["name"], remove_home):
            self.must(argv, what=f"Deleting the account {account['name']}")
        if self.get(account["name"]) is not None:
            raise AccountError(f"The account {account['name']} still exists after deleting it.")


class LinuxAccounts(Accounts):
    platform = "Linux"

    def __init__(self, run, login_defs="/etc/login.defs", useradd_defaults="/etc/default/useradd"):
        super().__init__(run)
        try:
            with open(login_defs, encoding="utf-8") as handle:
                self.first_regular_uid = parse_login_defs_uid_min(handle.read())
        except OSError:
            self.first_regular_uid = 1000
        try:
            with open(useradd_defaults, encoding="utf-8") as handle:
                self.new_home_root = parse_useradd_home(handle.read())
        except OSError:
            self.new_home_root = None

    @property
    def people_home_roots(self):
        return (*self.home_roots, *([self.new_home_root] if self.new_home_root else []))

    def admin_group(self):
        for group in ("sudo", "wheel", "admin"):
            rc, _, _ = self.run(["getent", "group", group])
            if rc == 0:
                return group
        raise AccountError("No sudo, wheel or admin group exists: install sudo, then run again.")

    def get(self, name):
        rc, out, _ = self.run(["getent", "passwd", name])
        if rc == 2 or not out.strip():
            return None
        if rc != 0:
            raise AccountError(f"getent passwd {name} failed (exit {rc}).")
        account = parse_getent_passwd(out)
        groups = self.must(["id", "-Gn", name], what=f"Listing the groups of {name}").split()
        account["groups"] = groups
        account["admin"] = self.admin_group() in groups
        return account

    def create_commands(self, name, fullname, shell, admin):
        argv = ["useradd", "--create-home", "--shell", shell, "--comment", fullname]
        if admin:
            argv += ["--groups", self.admin_group()]
        return [[*argv, name]]

    def modify_commands(self, account, fullname, shell, admin):
        commands = []
        if account["shell"] != shell:
            commands.append(["usermod", "--shell", shell, account["name"]])
        if account["fullname"] != fullname:
            commands.append(["usermod", "--comment", fullname, account["name"]])
        if admin and not account["admin"]:
            commands.append(["usermod", "--append", "--groups", self.admin_group(), account["name"]])
        return commands

    def password_command(self, name, password):
        return ["chpasswd"], f"{name}:{password}\n"

    def stop_commands(self, account):
        return [["pkill", "-KILL", "-u", str(account["uid"])]]

    def delete_commands(self, name, remove_home=True):
        # --remove only when the home is there: userdel fails (exit 12) on a missing one.
        return [["userdel", "--remove", name] if remove_home else ["userdel", name]]

    def console_users(self, who_file=None):
        _, out, _ = self.run(["who", who_file] if who_file else ["who"])
        return parse_who_console(out)


class DarwinAccounts(Accounts):
    """macOS through sysadminctl, dscl, dseditgroup and createhomedir (documented behaviour)."""

    platform = "Darwin"
    first_regular_uid = 501
    read_keys = ("UniqueID", "PrimaryGroupID", "NFSHomeDirectory", "UserShell", "RealName")

    def admin_group(self):
        return "admin"

    def get(self, name):
        rc, out, _ = self.run(["dscl", ".", "-read", f"/Users/{name}", *self.read_keys])
        if rc != 0:
            return None  # eDSRecordNotFound: dscl exits 56 and prints nothing useful on stdout.
        values = parse_dscl_read(out)
        if "UniqueID" not in values:
            return None
        _, member, _ = self.run(["dseditgroup", "-o", "checkmember", "-m", name, "admin"])
        return {
            "name": name,
            "uid": int(values["UniqueID"]),
            "gid": int(values.get("PrimaryGroupID") or 20),
            "fullname": values.get("RealName", ""),
            "home": values.get("NFSHomeDirectory", ""),
            "shell": values.get("UserShell", ""),
            "admin": parse_checkmember(member),
            "groups": ["admin"] if parse_checkmember(member) else [],
        }

    def create_commands(self, name, fullname, shell, admin):
        # sysadminctl exits 0 even when it fails (it only logs to stderr), so create() re-reads the
        # account afterwards. No -password here: it would sit in the process list; the password is set
        # through dscl on stdin. createhomedir fills the home from the system template (sysadminctl
        # leaves it to the first login on some releases).
        argv = ["sysadminctl", "-addUser", name, "-fullName", fullname, "-shell", shell]
        if admin:
            argv.append("-admin")
        return [argv, ["createhomedir", "-c", "-u", name]]

    def modify_commands(self, account, fullname, shell, admin):
        commands = []
        user = f"/Users/{account['name']}"
        if account["shell"] != shell:
            commands.append(["dscl", ".", "-create", user, "UserShell", shell])
        if account["fullname"] != fullname:
            commands.append(["dscl", ".", "-create", user, "RealName", fullname])
        if admin and not account["admin"]:
            commands.append(["dseditgroup", "-o", "edit", "-a", account["name"], "-t", "user", "admin"])
        return commands

    def password_command(self, name, password):
        return ["dscl", "."], f'passwd /Users/{name} "{password}"\n'

    def stop_commands(self, account):
        # launchctl bootout ends the user's launchd domain (login items, agents); pkill catches the rest.
        return [
            ["launchctl", "bootout", f"user/{account['uid']}"],
            ["pkill", "-KILL", "-U", str(account["uid"])],
        ]

    def delete_commands(self, name, remove_home=True):
        # sysadminctl deletes the home with the account (-keepHome would keep it); a missing home is fine.
        return [["sysadminctl", "-deleteUser", name]]

    def console_users(self, who_file=None):
        _, out, _ = self.run(["stat", "-f", "%Su", "/dev/console"])
        return parse_console_owner(out)


def backend_for(system, run):
    if system == "Darwin":
        return DarwinAccounts(run)
    if system == "Linux":
        return LinuxAccounts(run)
    raise AccountError(f"This toolkit manages accounts on macOS and Linux, not on {system}.")
