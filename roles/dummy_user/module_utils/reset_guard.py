"""The safety checks before reset-dummy or remove-dummy deletes an account: one sentence per refusal, or None.

Kept apart from the code that deletes, so every refusal is unit-tested and the module can run the checks
both before asking for confirmation and again right before acting: reset_refusal() about the account (a
pure function of facts), deletion_plan() about every path the deletion takes along (the allow-list of
removal_allowlist, judged on the live file system).
"""

import os
import pwd
import stat

try:
    from ansible.module_utils.removal_allowlist import UV_CACHE_DIR, allowlist_for, homebrew_links
    from ansible.module_utils.sdenv_system_paths import inside
except ImportError:  # unit tests import module_utils directly
    from removal_allowlist import UV_CACHE_DIR, allowlist_for, homebrew_links
    from sdenv_system_paths import inside


def reset_refusal(
    name, account, first_regular_uid, invoking_users, console_users, recorded, force, action="reset"
):
    """Return why resetting (action "reset") or removing (action "remove") `name` is refused, or None.

    account: the live account ({"uid": ...}) or None when it does not exist (nothing left to delete;
      the record's leftovers may still be removed, so a reset killed half-way converges).
    invoking_users: who runs make (USER, SUDO_USER, the SSH login user).
    recorded: the provision record's entry for `name`, or None.
    force: FORCE=yes, which lifts only the "not made by the toolkit" checks.
    """
    if name == "root" or (account is not None and account["uid"] == 0):
        return f"Refusing to {action} {name}: it is the root account."
    if name in {u for u in invoking_users if u}:
        return f"Refusing to {action} {name}: it is the account running this command; run it from another account."
    if account is None:
        if recorded or action == "remove":
            return None  # leftovers of the record go (or, for remove, there is nothing to do: the module says so)
        return (
            f"There is no account {name} on this host and the provision record has nothing for it, so there is"
            " nothing to reset: `make provision` creates it."
        )
    if account["uid"] < first_regular_uid:
        return (
            f"Refusing to {action} {name}: its uid {account['uid']} is below {first_regular_uid}, the first"
            " regular uid on this system, so it is a system account."
        )
    if name in console_users:
        return f"Refusing to {action} {name}: it is logged in at the console; log it out first."
    if not force:
        if recorded and recorded.get("adopted") and not recorded.get("created_by_toolkit"):
            return (
                f"Refusing to {action} {name}: it existed before this toolkit and was adopted (ADOPT=yes), so"
                f" deleting it would delete its home {account['home']} with its owner's files; run with FORCE=yes"
                " if you are sure."
            )
        if not recorded or not recorded.get("created_by_toolkit"):
            return (
                f"Refusing to {action} {name}: the provision record does not say this toolkit created it;"
                " run with FORCE=yes if you are sure."
            )
        if recorded.get("uid") != account["uid"]:
            return (
                f"Refusing to {action} {name}: its uid is {account['uid']} but the provision record says"
                f" {recorded.get('uid')}, so it is not the account the toolkit created; FORCE=yes to override."
            )
    return None


# The app trees a record names (component, words): roles webui and comfyui clone them as the dummy, so a tree
# the toolkit made is a directory the dummy owns. Anything else at that path (root's directory, a link the
# dummy put there) was not made by the toolkit, whatever the record says.
APP_TREES = (("webui", "WebUI tree"), ("comfyui", "ComfyUI tree"))


def app_tree_refusal(path, what, name, uid, lstat=os.lstat, readlink=os.readlink, owner_name=None):
    """Why the app tree at `path` that the record lists may not be deleted (a clause), or None: it must be a
    directory, not a symbolic link, owned by the dummy's uid. A path that is not there has nothing to judge.
    owner_name(uid) names an owner for the sentence (the password database by default)."""
    try:
        info = lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return (
            f"the {what} is a symbolic link (to {readlink(path)}), not the directory the toolkit cloned, and"
            " root follows no link the dummy could have made"
        )
    if not stat.S_ISDIR(info.st_mode):
        return f"the {what} is not a directory, so it is not the tree the toolkit cloned"
    if uid is None or info.st_uid != uid:
        owner = (owner_name or _account_name)(info.st_uid)
        return (
            f"the {what} is owned by {owner} (uid {info.st_uid}), not by {name}, as whom the toolkit clones it,"
            " so it is not the toolkit's"
        )
    return None


def _account_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no account"


def used_paths(entry):
    """The paths a record entry says its account uses outside its home (what another account's removal
    must leave in place): what it created, its WebUI and ComfyUI trees, its model store, its models' state
    and its uv cache."""
    components = (entry or {}).get("components") or {}
    webui = components.get("webui") or {}
    candidates = [
        *((entry or {}).get("created_paths") or []),
        webui.get("path"),
        (components.get("comfyui") or {}).get("path"),
        (webui.get("uv") or {}).get("cache"),
        (components.get("models") or {}).get("state_dir"),
        (components.get("models") or {}).get("store"),
    ]
    return [path.rstrip("/") for path in candidates if isinstance(path, str) and path.startswith("/")]


def still_used(path, others):
    """The first other account (name) whose record entry uses `path`, a place inside it or one holding it."""
    for other, entry in sorted((others or {}).items()):
        if any(inside(path, used) or inside(used, path) for used in used_paths(entry)):
            return other
    return None


def deletion_plan(
    name,
    action,
    account,
    recorded,
    home_roots,
    record_path,
    password_file=None,
    accounts=None,
    first_regular_uid=1000,
    others=None,
):
    """What deleting `name` removes besides the account itself, in order, and the refusals (sentences).

    Every path is judged by the allow-list as the file system resolves it, and a WebUI or ComfyUI tree the
    record lists also by what it is (app_tree_refusal), before anything is deleted: one refusal stops the
    whole deletion, so a wrong record never half-applies. action: "reset" | "remove".
    `password_file`: where earlier versions kept a generated password in plain text; it goes with the
    account whose password it held (reset recreates the account with a new one, kept nowhere).
    accounts, first_regular_uid: the host's, for the allow-list's WebUI rule (None: read them there).
    others: {name: entry} of the other accounts in the record; a path one of them still uses (the models'
    stat cache and download locks in the state directory) stays, and is returned in `kept` with its user.
    Returns (paths, refusals, kept {path: other account}).
    """
    home = account["home"] if account else (recorded or {}).get("home")
    state_dir = os.path.dirname(os.path.abspath(record_path))
    allowlist = allowlist_for(
        name, recorded, home, home_roots, state_dir, f"{action}-dummy", accounts, first_regular_uid
    )
    refusals, paths = [], []
    if account is not None:
        # The system tool (userdel --remove, sysadminctl -deleteUser) deletes the home with the account.
        if allowlist.home is None:
            refusals.append(
                f"Refusing to {action} {name}: {allowlist.unusable[home]}; delete it by hand if you mean it."
            )
        elif os.path.islink(home):
            refusals.append(
                f"Refusing to {action} {name}: its home {home} is a symbolic link (to {os.readlink(home)}), which"
                " deleting the account would follow; delete it by hand if you mean it."
            )
        elif allowlist.live_refusal(home):
            refusals.append(f"Refusing to {action} {name}: its home {home}: {allowlist.live_refusal(home)}.")
    elif home and os.path.lexists(home):
        paths.append((home, "the home the provision record names"))  # a deletion killed half-way
    for path in (recorded or {}).get("created_paths", []):
        paths.append((path, "the provision record lists it"))
    if password_file and os.path.lexists(password_file):
        paths.append((password_file, "the password an earlier version kept for it"))
    recorded_cache = ((((recorded or {}).get("components") or {}).get("webui") or {}).get("uv") or {}).get(
        "cache"
    )
    if action == "remove":
        # Its uv cache, kept by reset for the account it recreates: the state directory's (whether or not
        # the record got to name it: a provision stopped before its last step), and one the record names
        # elsewhere only when the allow-list admits it (else it is the user's to keep, not the toolkit's).
        for uv_cache in dict.fromkeys([os.path.join(state_dir, UV_CACHE_DIR, name), recorded_cache]):
            if uv_cache and os.path.lexists(uv_cache) and not allowlist.live_refusal(uv_cache):
                paths.append((uv_cache, "its uv cache"))
    for path in sorted(homebrew_links(allowlist)):
        paths.append((path, "a link brew made into its own trees"))
    trees = {}
    for component, what in APP_TREES:
        tree = (((recorded or {}).get("components") or {}).get(component) or {}).get("path")
        if isinstance(tree, str):
            trees[tree.rstrip("/")] = what
    uid = account["uid"] if account else (recorded or {}).get("uid")
    kept = {}
    for path, source in paths:
        reason = allowlist.live_refusal(path)
        if not reason and path.rstrip("/") in trees:
            reason = app_tree_refusal(path, trees[path.rstrip("/")], name, uid)
        if reason:
            refusals.append(f"Refusing to delete {path} ({source} for {name}): {reason}.")
        elif still_used(path, others):
            kept[path] = still_used(path, others)
    return [path for path, _ in paths if path not in kept], refusals, kept
