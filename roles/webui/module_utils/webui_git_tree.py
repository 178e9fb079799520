"""A git work tree held at a pinned commit, never clobbering local changes silently.

Used for the WebUI clone and each of its sub-repositories under repositories/. The rules:
- A missing tree is cloned in full (a shallow clone cannot check out an arbitrary commit) into a temporary
  sibling directory and renamed into place once it is checked out, so a kill leaves no half tree at the
  final path; leftovers of a killed clone are removed on the next run. The tree gets the mode a plain
  `git clone` gives it (0777 less the umask), not mkdtemp's 0700.
- An existing tree at the pinned commit with no local changes is left alone: no fetch, no write.
- Objects are fetched only when the pinned commit is not in the tree already.
- Tracked files with local changes stop the run with one sentence naming them, unless force resets them.
  Files the toolkit itself writes over tracked ones (webui-user.sh) are "managed": they never count as
  local changes and are restored before a checkout, then written again by their own task.
"""

import os
import shutil
import subprocess
import tempfile

try:
    from ansible.module_utils.step_progress import GitProgress, run_with_progress
except ImportError:  # unit tests import module_utils directly
    from step_progress import GitProgress, run_with_progress

CLONE_PREFIX = ".sdenv-clone-"


class GitTreeError(Exception):
    """A tree that cannot be brought to its pinned commit without losing something."""


def git_env():
    env = dict(os.environ)
    # Never wait on a credential prompt; parse git's output in one language.
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ASKPASS": "/bin/false"})
    return env


def last_line(completed):
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else "no output"


def run_git(args, cwd, git="git", check=True):
    """git ARGS in the work tree cwd; a failure names that tree."""
    completed = subprocess.run(
        [git, *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
    )
    if check and completed.returncode != 0:
        raise GitTreeError(f"git {' '.join(args)} failed in {cwd}: {last_line(completed)}")
    return completed


def run_git_progress(args, cwd, git, progress_file, label, action):
    """git clone/fetch with --progress: its counters go to progress_file (shown by the action), the rest is
    kept as stderr for the messages."""
    return run_with_progress([git, *args], cwd, git_env(), GitProgress(label, action, progress_file))


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


def is_clone(dest):
    """True when dest is the top of a git work tree (not merely inside the WebUI's own tree)."""
    return os.path.exists(os.path.join(dest, ".git"))


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


def remove_stale_clones(dest):
    parent, name = os.path.split(os.path.abspath(dest))
    removed = []
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if entry.startswith(f".{name}{CLONE_PREFIX}"):
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
    tmp = tempfile.mkdtemp(prefix=f".{name}{CLONE_PREFIX}", dir=parent)
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
              "reset_files": [], "stale_removed": []}  # fmt: skip
    if not check_mode:
        result["stale_removed"] = remove_stale_clones(dest)
    exists = os.path.isdir(dest)
    if exists and not is_clone(dest):
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
        if source:
            upload_pack = from_source(source)[1:]  # fetch has no --no-local
            fetch = ["fetch", "--progress", *upload_pack, source, "+refs/heads/*:refs/remotes/sdenv-bundle/*"]
        else:
            fetch = ["fetch", "--progress", "--tags", "origin"]
        fetched = run_git_progress(fetch, dest, git, progress_file, label, "fetch")
        if fetched.returncode != 0:
            raise unreachable("fetch", label, repo, dest, fetched, source)
        result["fetched"] = True
        if not has_commit(dest, commit, git=git):
            raise GitTreeError(
                f"The pinned commit {commit} is not in {repo}: check the lock (sdenv_lock) for this repository."
            )
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
