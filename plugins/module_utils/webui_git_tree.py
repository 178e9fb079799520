"""A git work tree held at a pinned commit, never clobbering local changes silently.

Used for the WebUI clone and each of its sub-repositories under repositories/. The rules:
- A missing tree is cloned in full (a shallow clone cannot check out an arbitrary commit) into a temporary
  sibling directory and renamed into place once it is checked out, so a kill leaves no half tree at the
  final path; leftovers of a killed clone are removed on the next run, never a clone a live run is still
  making (its name carries its process's pid and start time). The tree gets the mode a plain `git clone`
  gives it (0777 less the umask), not mkdtemp's 0700.
- git never falls through to a repository above the tree (the WebUI's own, around a sub-repository): every
  git command runs with GIT_CEILING_DIRECTORIES at the tree's parent, and a tree is a clone only when its
  own top level is that directory. Otherwise a sub-repository with a broken .git is taken for the WebUI
  tree, whose origin and HEAD then move to the sub-repository's (two runs at once left trees like that).
- A tree whose .git is broken (empty, or not a repository) is repaired in place: the broken .git goes (kept
  aside when it holds anything), the repository is made again from the pinned URL, and the files already
  there are then judged like any clone's (unchanged: nothing to do; changed: named, or reset with force).
- An existing tree at the pinned commit with no local changes is left alone: no fetch, no write.
- Objects are fetched only when the pinned commit is not in the tree already.
- Tracked files with local changes stop the run with one sentence naming them, unless force resets them.
  Files the toolkit itself writes over tracked ones (webui-user.sh) are "managed": they never count as
  local changes and are restored before a checkout, then written again by their own task.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time

try:
    from ansible.module_utils.sdenv_run_lock import start_token
except ImportError:  # unit tests import module_utils by their bare names
    from sdenv_run_lock import start_token

try:
    from ansible.module_utils.step_progress import GitProgress, run_with_progress
except ImportError:  # unit tests import module_utils directly
    from step_progress import GitProgress, run_with_progress

CLONE_PREFIX = ".sdenv-clone-"


class GitTreeError(Exception):
    """A tree that cannot be brought to its pinned commit without losing something."""


def git_env(ceiling=None):
    env = dict(os.environ)
    # Never wait on a credential prompt; parse git's output in one language.
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ASKPASS": "/bin/false"})
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"):
        env.pop(name, None)  # the tree's own repository, never one named by the caller's environment
    if ceiling:
        env["GIT_CEILING_DIRECTORIES"] = ceiling
    return env


def last_line(completed):
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else "no output"


def run_git(args, cwd, git="git", check=True):
    """git ARGS in the work tree cwd, which git never leaves for a repository above it; a failure names cwd."""
    ceiling = os.path.dirname(os.path.realpath(cwd))
    completed = subprocess.run(
        [git, *args], cwd=cwd, env=git_env(ceiling), capture_output=True, text=True, check=False
    )
    if check and completed.returncode != 0:
        raise GitTreeError(f"git {' '.join(args)} failed in {cwd}: {last_line(completed)}")
    return completed


def run_git_progress(args, cwd, git, progress_file, label, action):
    """git clone/fetch with --progress: its counters go to progress_file (shown by the action), the rest is
    kept as stderr for the messages."""
    ceiling = os.path.dirname(os.path.realpath(cwd))  # as run_git: never a repository above cwd
    return run_with_progress([git, *args], cwd, git_env(ceiling), GitProgress(label, action, progress_file))


def unreachable(action, label, repo, dest, completed, source=""):
    """The sentence for a clone or fetch that could not get the repository from its URL (or bundle copy)."""
    if source:
        return GitTreeError(
            f"Could not {action} the {label} from the offline bundle's copy {source} into {dest} "
            f"({last_line(completed)}): check the bundle with make bundle-check BUNDLE=<dir>."
        )
    return GitTreeError(
        f"Could not {action} the {label} from {repo} into {dest} ({last_line(completed)}): check that this host "
        "reaches that URL, or point the lock (sdenv_lock) at a mirror it does reach, or provision from an "
        "offline bundle (make bundle on a connected machine, then BUNDLE=dir)."
    )


def is_clone(dest, git="git"):
    """True when dest is the top of a git work tree of its own: not merely inside the WebUI's tree, and not a
    directory whose .git is empty or is not a repository."""
    if not os.path.lexists(os.path.join(dest, ".git")):
        return False
    top = run_git(["rev-parse", "--show-toplevel"], cwd=dest, git=git, check=False)
    if top.returncode != 0 and "safe.directory" in top.stderr:
        # A repository git will not read for this user is not a broken one: never "repair" it.
        raise GitTreeError(f"git refuses to read {dest} as this user ({last_line(top)}): it belongs to another "
                           "user; give it back to the dummy user (chown -R), then run again.")  # fmt: skip
    return top.returncode == 0 and os.path.realpath(top.stdout.strip()) == os.path.realpath(dest)


def has_broken_git(dest, git="git"):
    """dest holds a .git that is no repository (a clone cut short, or a tree two runs raced on)."""
    return os.path.lexists(os.path.join(dest, ".git")) and not is_clone(dest, git=git)


def parse_porcelain(output):
    """Paths from `git status --porcelain=v1 -z` output (renames give the new path)."""
    paths = []
    fields = output.split("\0")
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in status or "C" in status:
            index += 1  # the rename's source path follows as its own field
    return paths


def local_changes(dest, managed=(), git="git"):
    """Tracked files that differ from HEAD (staged or not), minus the managed ones, sorted."""
    output = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd=dest, git=git).stdout
    return sorted(p for p in parse_porcelain(output) if p not in set(managed))


def head(dest, git="git"):
    return run_git(["rev-parse", "HEAD"], cwd=dest, git=git).stdout.strip()


def has_commit(dest, commit, git="git"):
    return run_git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=dest, git=git, check=False).returncode == 0


def clone_owner_tag(pid=None):
    """'<pid>-<start>' for a temporary clone's name: the process making it, so no other run removes it while
    that process lives (the start time tells it from a later process given the same pid)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{re.sub(r'[^0-9A-Za-z]', '_', start_token(pid) or '')}"


def clone_owner_alive(suffix):
    """Whether the process named at the start of a temporary clone's suffix still runs. Names without an
    owner (made before owners were recorded) have none alive."""
    match = re.match(r"(\d+)-([0-9A-Za-z_]+)-", suffix)
    return bool(match) and clone_owner_tag(int(match.group(1))) == f"{match.group(1)}-{match.group(2)}"


def remove_stale_clones(dest):
    """Remove what killed clones of dest left; a clone another live run is making is left to it."""
    parent, name = os.path.split(os.path.abspath(dest))
    removed = []
    prefix = f".{name}{CLONE_PREFIX}"
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if entry.startswith(prefix) and not clone_owner_alive(entry[len(prefix) :]):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
                removed.append(entry)
    return removed


def describe(label, files):
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return (
        f"The {label} at {{dest}} has local changes to {shown}: commit or move them away, or run again "
        "with FORCE=yes to reset them to the pinned commit."
    )


def clone_mode():
    """The mode `git clone` gives the directory it creates: 0777 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def from_source(source):
    """Transport options to read a local source repository owned by another user (an offline bundle's, root's):
    git refuses it as "dubious ownership", and a `-c safe.directory` of the calling git does not reach the
    upload-pack it runs, so upload-pack gets its own. --no-local: never hard-link or copy root's object files."""
    if not source:
        return []
    return ["--no-local", f"--upload-pack=git -c safe.directory={os.path.abspath(source)} upload-pack"]


def clone(dest, repo, commit, label="tree", git="git", source="", progress_file=""):
    """Clone repo (or a local source holding the same commits: origin is then set to repo) at commit."""
    parent, name = os.path.split(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}{CLONE_PREFIX}{clone_owner_tag()}-", dir=parent)
    try:
        os.chmod(tmp, clone_mode())
        cloned = run_git_progress(["clone", "--progress", "--no-checkout", *from_source(source), source or repo, tmp],
                                  parent, git, progress_file, label, "clone")  # fmt: skip
        if cloned.returncode != 0:
            raise unreachable("clone", label, repo, dest, cloned, source)
        if source:
            run_git(["remote", "set-url", "origin", repo], cwd=tmp, git=git)
        if not has_commit(tmp, commit, git=git):
            raise GitTreeError(
                f"The pinned commit {commit} is not in {repo}: check the lock (sdenv_lock) for this repository."
            )
        run_git(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit], cwd=tmp, git=git
        )
        if os.path.isdir(dest):
            os.rmdir(dest)  # only ever an empty directory here
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fetch_commit(dest, repo, commit, label, git="git", source="", progress_file=None):
    """Fetch repo's objects (or the offline bundle's copy of them) into dest; the pinned commit must be there.
    progress_file: where git's progress goes for the controller to show (step_progress)."""
    if source:
        upload_pack = from_source(source)[1:]  # fetch has no --no-local
        fetch = ["fetch", "--progress", *upload_pack, source, "+refs/heads/*:refs/remotes/sdenv-bundle/*"]
    else:
        fetch = ["fetch", "--progress", "--tags", "origin"]
    fetched = run_git_progress(fetch, dest, git, progress_file, label, "fetch")
    if fetched.returncode != 0:
        raise unreachable("fetch", label, repo, dest, fetched, source)
    if not has_commit(dest, commit, git=git):
        raise GitTreeError(
            f"The pinned commit {commit} is not in {repo}: check the lock (sdenv_lock) for this repository."
        )


def repair(dest, repo, commit, label, git="git", source=""):
    """Make dest's broken .git a repository again at commit, leaving every file of the tree as it is (HEAD
    and index at commit, work tree untouched): ensure_tree then judges those files like any clone's. A broken
    .git holding anything is kept aside beside it, never deleted; an empty one goes."""
    broken = os.path.join(dest, ".git")
    kept = ""
    if os.path.isdir(broken) and not os.path.islink(broken) and not os.listdir(broken):
        os.rmdir(broken)
    elif os.path.isfile(broken) and not os.path.islink(broken) and os.path.getsize(broken) == 0:
        os.unlink(broken)
    else:
        kept = f"{broken}.sdenv-broken-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        os.rename(broken, kept)
    run_git(["init", "--quiet"], cwd=dest, git=git)
    run_git(["remote", "add", "origin", repo], cwd=dest, git=git)
    fetch_commit(dest, repo, commit, label, git=git, source=source)
    run_git(["reset", "--quiet", "--mixed", commit], cwd=dest, git=git)
    return kept


def ensure_tree(
    dest,
    repo,
    commit,
    label="tree",
    force=False,
    managed=(),
    check_mode=False,
    git="git",
    source="",
    progress_file="",
):
    """Bring dest to commit. Returns a dict: changed, action, before, after, fetched, reset_files."""
    result = {"changed": False, "action": "none", "before": None, "after": commit, "fetched": False,
              "reset_files": [], "stale_removed": [], "repaired": False, "broken_git_kept": ""}  # fmt: skip
    if not check_mode:
        result["stale_removed"] = remove_stale_clones(dest)
    exists = os.path.isdir(dest)
    if exists and has_broken_git(dest, git=git):
        result.update(changed=True, action="repair", repaired=True, before=None)
        if check_mode:
            return result
        result["broken_git_kept"] = repair(dest, repo, commit, label, git=git, source=source)
        # Files of the pinned commit that are missing are only restored; files that differ are the user's
        # (or a race's) and are named, as in any clone, unless force resets them.
        changes = local_changes(dest, managed, git=git)
        modified = [path for path in changes if os.path.lexists(os.path.join(dest, path))]
        if modified and not force:
            raise GitTreeError(describe(label, modified).format(dest=dest))
        checkout = ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", "--force", commit]
        run_git(checkout if changes else [*checkout[:-2], commit], cwd=dest, git=git)
        result["reset_files"] = modified
        return result
    if exists and not is_clone(dest, git=git):
        if os.listdir(dest):
            raise GitTreeError(
                f"The {label} directory {dest} exists but is not a git clone: move it aside (or empty it), "
                "then run again."
            )
        exists = False
    if not exists:
        result.update(changed=True, action="clone")
        if not check_mode:
            clone(dest, repo, commit, label=label, git=git, source=source, progress_file=progress_file)
        return result

    result["before"] = head(dest, git=git)
    changes = local_changes(dest, managed, git=git)
    if changes and not force:
        raise GitTreeError(describe(label, changes).format(dest=dest))
    url = run_git(["config", "--get", "remote.origin.url"], cwd=dest, git=git, check=False).stdout.strip()
    if url != repo:
        result.update(changed=True, action="set-url")
        if not check_mode:
            if url:
                run_git(["remote", "set-url", "origin", repo], cwd=dest, git=git)
            else:
                run_git(["remote", "add", "origin", repo], cwd=dest, git=git)
    if result["before"] == commit and not changes:
        return result

    result.update(changed=True, action="reset" if changes else "checkout", reset_files=changes)
    if check_mode:
        return result
    if not has_commit(dest, commit, git=git):
        fetch_commit(dest, repo, commit, label, git=git, source=source, progress_file=progress_file)
        result["fetched"] = True
    present_managed = [m for m in managed if os.path.exists(os.path.join(dest, m))]
    if present_managed and not force:
        # Put the toolkit's own rewrites back so the checkout never refuses over them; they are written again.
        run_git(["checkout", "--quiet", "HEAD", "--", *present_managed], cwd=dest, git=git, check=False)
    checkout = ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach"]
    run_git([*checkout, *(["--force"] if force else []), commit], cwd=dest, git=git)
    after = head(dest, git=git)
    if after != commit:
        raise GitTreeError(f"The {label} at {dest} is at {after} after checkout, not the pinned {commit}.")
    return result
