"""What reset-dummy and remove-dummy may delete on a host: an allow-list, never a deny-list.

For one account they may delete only:
- the account's home (`/home/NAME` on Linux, `/Users/NAME` on macOS) and anything inside it;
- the WebUI tree, ComfyUI's tree and the model store the provision record names for it, only where the
  preflight would accept each as a directory the dummy owns (sdenv_system_paths: in the account's home, or outside every
  system tree, root's home and every other account's home), judged as named and as the file system resolves
  it;
- the Homebrew prefix the record says the toolkit installed: the whole `/opt/homebrew` (Apple Silicon, where
  Homebrew owns the prefix alone), or on Intel only Homebrew's own entries in the shared `/usr/local` (its
  repository, Cellar, Caskroom, Frameworks, var/homebrew, bin/brew, and the links brew made into them);
- the state directory's entries for that account: its generated password (`NAME.password`), its uv cache
  (`uv-cache/NAME`) and the models' stat cache and download progress (`models/`). Never the record, the
  model bundle, the tools directory or a snapshot store; and only when the state directory is one the
  preflight would accept (not inside a system tree), as named and as resolved.

Anything else a record names, or a path that only reaches an allowed place through a symbolic link, is
refused. A system directory is never a root of the list, whatever the record says, and a path is first
checked for form (absolute, normal). Pure logic over paths: the module passes `realpath`/`readlink` to look at
the live file system; unit tests pass recorded layouts of Linux and macOS hosts.
"""

import os
import pwd

try:
    from ansible.module_utils.sdenv_system_paths import HOMEBREW_TREES, SYSTEM_PATHS, inside, unprivate
except ImportError:  # unit tests import module_utils directly
    from sdenv_system_paths import HOMEBREW_TREES, SYSTEM_PATHS, inside, unprivate

# Homebrew's default prefixes (its installer's choice by architecture).
HOMEBREW_ARM64_PREFIX = "/opt/homebrew"
HOMEBREW_INTEL_PREFIX = "/usr/local"
# Homebrew's own top-level entries in /usr/local on Intel: the only ones that may go there, because
# /usr/local is shared with other software.
HOMEBREW_INTEL_OWN_PATHS = ("Homebrew", "Cellar", "Caskroom", "Frameworks", "var/homebrew", "bin/brew")
# Where brew links formulae into /usr/local (the directories Homebrew's own uninstaller walks for links).
HOMEBREW_INTEL_LINK_DIRS = ("Frameworks", "bin", "etc", "include", "lib", "opt", "sbin", "share", "var")
# What those links point into: removing these trees leaves the links dangling.
HOMEBREW_INTEL_LINK_TARGETS = ("Homebrew", "Cellar", "Caskroom")

# Where account homes live, per platform (useradd's and sysadminctl's defaults).
HOME_ROOTS = {"Linux": ("/home",), "Darwin": ("/Users",)}

# Entries of the state directory that belong to the environment of the account being deleted, besides its
# password file: the models' stat cache and download progress (role models).
STATE_DIR_ENTRIES = ("models",)
# uv's cache of each account (role webui's default sdenv_webui_uv_cache_dir: <state dir>/uv-cache/NAME), kept
# across reset-dummy on purpose (a warm cache) and deleted by remove-dummy.
UV_CACHE_DIR = "uv-cache"

# A second line of defence: never a root of the allow-list, never deleted whole, whatever a record says (the
# preflight's list of system directories, one definition, but for Homebrew's: they have their own rule here).
SYSTEM_DIRECTORIES = SYSTEM_PATHS.directories - frozenset(HOMEBREW_TREES)


class RemovalRefused(Exception):
    """A path that may not be deleted; the message is one sentence."""


def form_problem(path):
    """Why `path` cannot be used at all (not a string, relative, not normal), or None."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return "it is not an absolute path"
    if os.path.normpath(path) != (path.rstrip("/") or "/") or ".." in path.split("/") or "//" in path:
        return "it is not in normal form"
    return None


def is_system_directory(path):
    """A system directory, a top-level directory, or a directory that holds one."""
    normal = os.path.normpath(path)
    if normal in SYSTEM_DIRECTORIES or unprivate(normal) in SYSTEM_DIRECTORIES or normal.count("/") < 2:
        return True
    return any(system.startswith(normal + "/") for system in SYSTEM_DIRECTORIES)


def host_accounts():
    """Every account of this host as the preflight sees them ({name, uid, home})."""
    return [{"name": e.pw_name, "uid": e.pw_uid, "home": e.pw_dir} for e in pwd.getpwall()]


def check_recordable(path):
    """Raise RemovalRefused unless a record may name `path` at all (form, not a system directory).

    What reset may actually delete is decided later, by the allow-list of the account; this keeps a role
    from ever recording a path no reset could act on.
    """
    problem = form_problem(path)
    if problem:
        raise RemovalRefused(f"The path {path!r} cannot go into the provision record: {problem}.")
    if is_system_directory(path):
        raise RemovalRefused(
            f"The path {path} cannot go into the provision record: it is a system directory, which the"
            " toolkit never removes whole."
        )
    return os.path.normpath(path)


class RemovalAllowlist:
    """The places one reset or remove may delete for one account.

    user: the account name; home: its home (the live account's, else the record's), or None;
    home_roots: where homes live on this platform (HOME_ROOTS); state_dir: the toolkit's state directory;
    webui_dir: the WebUI tree the record names; homebrew_prefix: the prefix the record says the toolkit
    installed (None when it did not install one); comfyui_dir: ComfyUI's tree the record names (role
    comfyui), judged as the WebUI tree is; action: "reset-dummy" or "remove-dummy" (for the words);
    accounts: [{name, uid, home}] of the host and first_regular_uid, for the preflight's rule on where a
    WebUI directory may be (sdenv_system_paths).
    """

    def __init__(
        self,
        user,
        home=None,
        home_roots=(),
        state_dir=None,
        webui_dir=None,
        homebrew_prefix=None,
        action="reset-dummy",
        accounts=(),
        first_regular_uid=1000,
        model_store=None,
        comfyui_dir=None,
    ):
        self.user, self.action, self.home_roots = user, action, tuple(home_roots)
        self.accounts, self.first_regular_uid = list(accounts), first_regular_uid
        self.trees = []  # (root, what it is)
        self.unusable = {}  # root the record names but cannot be one -> why (a clause)
        self.judged = {}  # root -> (the place whose rule it follows, "dummy" | "place"): judged again resolved
        self.link_targets = []  # Intel: trees whose links in /usr/local go with them
        self.home = self._home(home)
        if self.home:
            self.trees.append((self.home, "its home"))
        if webui_dir:
            self._dummy_tree(webui_dir, "WebUI tree")
        if comfyui_dir:
            self._dummy_tree(comfyui_dir, "ComfyUI tree")
        if model_store:
            self._dummy_tree(model_store, "model store")
        if homebrew_prefix:
            self._homebrew(homebrew_prefix)
        self.state_dir = None
        if state_dir:
            problem = self._usable_root(state_dir) or self._place_problem(state_dir, "place")
            if problem is None:
                self.state_dir = state_dir.rstrip("/")
            else:
                self.unusable[state_dir] = (
                    f"the state directory {state_dir} cannot hold anything to delete: {problem}"
                )
        if self.state_dir:
            for name in (f"{user}.password", os.path.join(UV_CACHE_DIR, user), *STATE_DIR_ENTRIES):
                entry = os.path.join(self.state_dir, name)
                self.trees.append((entry, "its entries in the state directory"))
                self.judged[entry] = (self.state_dir, "place")

    # --- building the list --------------------------------------------------------------------------

    def _usable_root(self, path):
        problem = form_problem(path)
        if problem:
            return problem
        if is_system_directory(path):
            return "it is a system directory"
        return None

    def _home(self, home):
        if not home:
            return None
        wanted = [os.path.join(root, self.user) for root in self.home_roots]
        if self._usable_root(home) is None and home.rstrip("/") in wanted:
            return home.rstrip("/")
        self.unusable[home] = (
            f"{self.user}'s home {home} is not {' or '.join(wanted) or 'a regular home'}, the only place"
            f" {self.action} deletes a home"
        )
        return None

    def _in_another_home(self, path):
        return any(inside(path, root) for root in self.home_roots) and not (
            self.home and inside(path, self.home)
        )

    def _place_problem(self, path, kind, home=None):
        """Why the preflight would refuse `path` as a place of `kind` ("dummy": the WebUI directory; "place":
        the state directory), as a clause, or None. Inside the account's own home a WebUI tree is fine."""
        home = self.home if home is None else home
        if kind == "dummy" and home and inside(path, home):
            return None
        problem = SYSTEM_PATHS.problem(path, kind, self.accounts, self.user, self.first_regular_uid)
        return f"the preflight expects {problem}" if problem else None

    def _dummy_tree(self, path, what):
        """A directory of the dummy's the record names (its WebUI tree, its model store)."""
        problem = form_problem(path) or self._place_problem(path.rstrip("/"), "dummy")
        problem = problem or self._usable_root(path)
        if problem is None and self._in_another_home(path):
            problem = "it is inside another account's home"
        if problem:
            self.unusable[path] = f"the {what} {path} the record names cannot be deleted: {problem}"
            return
        self.trees.append((path.rstrip("/"), f"its {what}"))
        self.judged[path.rstrip("/")] = (path.rstrip("/"), "dummy")

    def _homebrew(self, prefix):
        prefix = prefix.rstrip("/") or "/"
        if prefix == HOMEBREW_ARM64_PREFIX:
            self.trees.append((prefix, "the Homebrew prefix the toolkit installed"))
        elif prefix == HOMEBREW_INTEL_PREFIX:
            for name in HOMEBREW_INTEL_OWN_PATHS:
                self.trees.append((f"{prefix}/{name}", "Homebrew's own entries in /usr/local"))
            self.link_targets = [f"{prefix}/{name}" for name in HOMEBREW_INTEL_LINK_TARGETS]
        else:
            self.unusable[prefix] = (
                f"the Homebrew prefix {prefix} the record names is not {HOMEBREW_ARM64_PREFIX} or"
                f" {HOMEBREW_INTEL_PREFIX}, the only prefixes the toolkit installs Homebrew into"
            )

    # --- asking ---------------------------------------------------------------------------------------

    def describe(self):
        """The allowed places, for a refusal sentence."""
        seen, parts = set(), []
        for root, what in self.trees:
            if what not in seen:
                seen.add(what)
                where = {
                    "its entries in the state directory": f"its entries in {self.state_dir}",
                    "Homebrew's own entries in /usr/local": what,
                }.get(what, f"{what} {root}")
                parts.append(where)
        return ", ".join(parts) if parts else "nothing at all (the record names no usable place)"

    def _allowed(self, path, link_target=None, trees=None, link_targets=None):
        trees = self.trees if trees is None else trees
        link_targets = self.link_targets if link_targets is None else link_targets
        if any(inside(path, root) for root, _ in trees):
            return True
        # Intel: a link brew made in one of its link directories, pointing into a tree that goes.
        if link_target is not None and link_targets:
            directory = os.path.dirname(path)
            prefix = os.path.dirname(link_targets[0])
            in_link_dir = any(inside(directory, f"{prefix}/{d}") for d in HOMEBREW_INTEL_LINK_DIRS)
            target = os.path.normpath(os.path.join(directory, link_target))
            return in_link_dir and any(inside(target, root) for root in link_targets)
        return False

    def refusal(self, path, link_target=None):
        """Why `path` may not be deleted (a clause), or None. link_target: what the path links to, when it
        is a symbolic link (only Homebrew's links in /usr/local are judged by it)."""
        problem = form_problem(path)
        if problem:
            return problem
        normal = path.rstrip("/") or "/"
        if is_system_directory(normal):
            return "it is a system directory, which the toolkit never deletes"
        if not self._allowed(normal, link_target):
            why = [
                clause for root, clause in self.unusable.items() if inside(normal, root.rstrip("/") or "/")
            ]
            return f"it is outside what {self.action} may delete for {self.user} " + (
                f"({why[0]})" if why else f"({self.describe()})"
            )
        return None

    def live_refusal(self, path, realpath=os.path.realpath, readlink=os.readlink):
        """refusal() for the path as named and as the file system resolves it, so that a symbolic link on
        the way (a parent directory that links elsewhere) never carries a deletion outside the list.

        Only parents are resolved, for the path and for each root alike: a link is deleted, never followed,
        and a root that is itself a link covers the link, not what it points to. (macOS resolves /var to
        /private/var for the state directory and its roots the same way, so they still match.)
        """
        try:
            link_target = readlink(path)
        except OSError:
            link_target = None  # not a link (or not there)
        reason = self.refusal(path, link_target)
        if reason:
            return reason
        normal = path.rstrip("/")

        def resolve(p):
            return os.path.join(realpath(os.path.dirname(p)), os.path.basename(p))

        resolved = resolve(normal)
        # A root the record names is judged again as the file system resolves it: /tmp/x/link/webui with
        # link -> /etc is /etc/webui, which the preflight would never have accepted as a WebUI directory.
        trees, unusable = [], []
        home = resolve(self.home) if self.home else None
        for root, what in self.trees:
            place, kind = self.judged.get(root, (None, None))
            problem = place and self._place_problem(resolve(place), kind, home)
            if problem and inside(normal, root):
                unusable.append(f"{place} the record names is {resolve(place)} on this host, and {problem}")
            elif not problem:
                trees.append((resolve(root), what))
        if unusable:
            return f"it is outside what {self.action} may delete for {self.user} ({unusable[0]})"
        if resolved == normal:
            return None
        link_targets = [resolve(root) for root in self.link_targets]
        if not is_system_directory(resolved) and self._allowed(resolved, link_target, trees, link_targets):
            return None
        return (
            f"a symbolic link on the way makes it {resolved}, which is outside what {self.action} may delete"
            f" for {self.user}"
        )


def allowlist_for(
    user, entry, home, home_roots, state_dir, action="reset-dummy", accounts=None, first_regular_uid=1000
):
    """The allow-list for `user` from its provision record entry (None when it has none); accounts: the
    host's (None: read them here)."""
    components = (entry or {}).get("components") or {}
    webui = components.get("webui") or {}
    homebrew = components.get("homebrew") or {}
    prefix = homebrew.get("prefix") if homebrew.get("installed_by_toolkit") is True else None
    return RemovalAllowlist(
        user,
        home=home,
        home_roots=home_roots,
        state_dir=state_dir,
        webui_dir=webui.get("path"),
        homebrew_prefix=prefix,
        action=action,
        accounts=host_accounts() if accounts is None else accounts,
        first_regular_uid=first_regular_uid,
        model_store=(components.get("models") or {}).get("store"),
        comfyui_dir=(components.get("comfyui") or {}).get("path"),
    )


def homebrew_links(allowlist, walk=os.walk, readlink=os.readlink):
    """Intel: the links brew made in /usr/local's link directories that point into Homebrew's trees the
    allow-list lets go ({path: target}); without them, removing the Cellar would leave links dangling on
    every user's PATH. Empty when the toolkit's Homebrew is not the Intel one."""
    links = {}
    if not allowlist.link_targets:
        return links
    for name in HOMEBREW_INTEL_LINK_DIRS:
        top = f"{HOMEBREW_INTEL_PREFIX}/{name}"
        for directory, dirnames, filenames in walk(top):
            # os.walk lists a link to a directory among dirnames and never descends into it.
            for entry in dirnames + filenames:
                path = os.path.join(directory, entry)
                try:
                    target = readlink(path)
                except OSError:
                    continue  # not a link
                if allowlist.refusal(path, target) is None and not any(
                    inside(path, root) for root, _ in allowlist.trees
                ):
                    links[path] = target
    return links
