"""What belongs to the operating system on Debian/Ubuntu and macOS: the one definition of "system tree".

Two users of it, which must never disagree: the preflight (sdenv_preflight's Path rule, which says where a
setting may put the toolkit's places) and the allow-list of reset-dummy / remove-dummy (removal_allowlist,
which says what a provision record may make them delete). A WebUI tree a record names is deletable only where
the preflight would have accepted it as the WebUI directory, and the state directory's entries only where it
would have accepted the state directory: both ask `SYSTEM_PATHS.problem()` the same question.

Pure logic over path strings (no file system access): the allow-list resolves links itself first. Plain
imports only, so that modules (ansible.module_utils) and the controller's preflight can both load it.
"""

import posixpath

# macOS keeps /etc, /tmp and /var in /private (the top-level names are links to them): a path there is
# judged as the name it has outside /private, so that /private/etc/ssh is /etc/ssh and the resolved
# /private/var/db/sdenv is the state directory /var/db/sdenv.
PRIVATE_MIRRORS = ("/etc", "/tmp", "/var")


def inside(path, directory):
    """path is directory or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def strictly_inside(path, directory):
    return path != directory and inside(path, directory)


def unprivate(path):
    """The name a macOS /private/{etc,tmp,var} path has at the top level (other paths as they are)."""
    for name in PRIVATE_MIRRORS:
        if inside(path, "/private" + name):
            return path[len("/private") :]
    return path


class SystemPaths:
    """What belongs to the operating system.

    directories: never a toolkit place itself, whatever is inside (the toolkit may well work below /var/lib
    or /Users). trees: the toolkit puts nothing anywhere inside them, except under the `except_under`
    directories (/usr/local is the local administrator's, not the distribution's). dummy_trees: besides,
    no directory the dummy owns (the WebUI directory, its home, its caches) goes inside them: the system's
    own state (/var/lib, /var/db), root's home, and the system-wide Library. The toolkit's root-owned state
    may live there (/var/lib/sdenv), a tree the dummy can change may not.
    """

    def __init__(self, directories, trees, dummy_trees=(), except_under=()):
        self.directories, self.trees, self.except_under = frozenset(directories), trees, except_under
        self.dummy_trees = dummy_trees

    def tree_holding(self, path, trees=None):
        path = unprivate(path)
        for tree in self.trees if trees is None else trees:
            if inside(path, tree) and not any(
                inside(path, free) and strictly_inside(free, tree) for free in self.except_under
            ):
                return tree
        return None

    def is_directory(self, path):
        return path in self.directories or unprivate(path) in self.directories

    def problem(self, path, what, accounts=(), user_name=None, first_regular_uid=1000):
        """Why an absolute, normal `path` cannot be a toolkit place of kind `what`, as the words that follow
        "expected" in a preflight sentence, or None.

        what: "file" (read by the toolkit: not a system directory or another account's home), "place" (a
        directory root writes: also not inside a system tree) or "dummy" (a directory the dummy owns: also
        not inside a tree of dummy_trees, nor inside the home of a person (root or a regular account) other
        than `user_name`). accounts: [{name, uid, home}] of the host.
        """
        if path == "/":
            return "a path of its own, not / itself"
        if self.is_directory(path):
            return f"a path of its own, not the system directory {path}"
        if what in ("place", "dummy"):
            tree = self.tree_holding(path)
            if tree:
                return f"a path of its own outside {tree}, which belongs to the system"
        for account in accounts:
            if account["name"] != user_name and account["home"] not in ("", "/") and path == account["home"]:
                return f"a path of its own, not the home of the account {account['name']}"
        if what == "dummy":
            for account in people(accounts, user_name, first_regular_uid):
                if strictly_inside(path, account["home"]):
                    return f"a path outside {account['home']}, the home of the account {account['name']}"
            tree = self.tree_holding(path, self.dummy_trees)
            if tree:
                return f"a path of its own outside {tree}, which belongs to the system"
        return None


def people(accounts, user_name, first_regular_uid):
    """Accounts of people (and root) other than `user_name`: a home of theirs is nobody else's place."""
    return [
        a for a in accounts
        if a["name"] != user_name and (a["uid"] == 0 or a["uid"] >= first_regular_uid)
        and isinstance(a["home"], str) and a["home"].startswith("/") and a["home"] != "/"
        and posixpath.normpath(a["home"]) == a["home"]
    ]  # fmt: skip


# Homebrew's prefix on Apple Silicon and its own trees in /usr/local on Intel: no setting may name them (the
# homebrew role owns them), and reset-dummy deletes them only when the record says the toolkit installed
# Homebrew (removal_allowlist's own rule).
HOMEBREW_TREES = ("/opt/homebrew", "/usr/local/Caskroom", "/usr/local/Cellar", "/usr/local/Homebrew")

SYSTEM_PATHS = SystemPaths(
    directories=[
        # Debian/Ubuntu (FHS)
        "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found",
        "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr",
        "/usr/bin", "/usr/games", "/usr/include", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec",
        "/usr/local", "/usr/local/bin", "/usr/local/etc", "/usr/local/games", "/usr/local/include",
        "/usr/local/lib", "/usr/local/man", "/usr/local/sbin", "/usr/local/share", "/usr/local/src", "/usr/sbin",
        "/usr/share", "/usr/src", "/var", "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock",
        "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp", "/var/www",
        # macOS (/etc, /tmp and /var are links into /private there)
        "/Applications", "/Library", "/Library/Application Support", "/Library/LaunchAgents",
        "/Library/LaunchDaemons", "/Library/Preferences", "/Network", "/System", "/Users", "/Users/Shared",
        "/Volumes", "/cores", "/private", "/private/etc", "/private/tmp", "/private/var", "/private/var/db",
        "/private/var/folders", "/private/var/root", "/var/db", "/var/empty", "/var/folders", "/var/root",
        "/var/vm",
        # Homebrew's prefixes (Apple Silicon, Intel) and its own directories in /usr/local
        *HOMEBREW_TREES, "/usr/local/opt", "/usr/local/var",
    ],
    trees=[
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
        "/snap", "/sys", "/usr", "/var/cache/apt", "/var/lib/apt", "/var/lib/dpkg",
        "/System", *HOMEBREW_TREES,
    ],
    dummy_trees=[
        "/root", "/var/root", "/var/lib", "/var/db", "/var/backups", "/var/cache", "/var/log", "/var/mail",
        "/var/spool", "/var/empty", "/var/vm", "/Library", "/Network", "/private",
    ],
    # /usr/local belongs to the local administrator, not to the distribution (Homebrew's parts excepted).
    except_under=["/usr/local"],
)  # fmt: skip
