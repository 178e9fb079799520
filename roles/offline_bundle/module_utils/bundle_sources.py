"""Where `make lock-venv` and `make bundle` get the pinned upstream sources on the controller.

- Git: a bare cache per repository (`<cache>/git/<name>.git`), cloned once and fetched only when the pinned
  commit is missing. Git's own `url.<base>.insteadOf` configuration redirects a lock URL to a mirror, so a
  controller without GitHub can use any clone that has the commits.
- Archives (CLIP, open_clip): `<cache>/archives/<file>`, downloaded from the lock's URL only when no file
  there reproduces the pinned git tree. Any archive whose files reproduce the tree is accepted (GitHub's
  bytes are not stable; `git archive --format=zip --prefix=<name>-<commit>/ <commit>` from a clone gives an
  equally valid one), and its sha256 is checked too when the lock pins one.
"""

import os
import shutil
import subprocess
import tempfile
import urllib.request
import zipfile

try:
    from ansible.module_utils.git_tree_id import TreeIdError, zip_tree_id
    from ansible.module_utils.package_index import sha256_file
    from ansible.module_utils.webui_git_tree import git_env
except ImportError:  # the controller's tools and unit tests import module_utils directly
    from git_tree_id import TreeIdError, zip_tree_id
    from package_index import sha256_file
    from webui_git_tree import git_env

PIN_BRANCH = "sdenv-pinned"


class SourceError(Exception):
    """A pinned source that cannot be had, named in one sentence."""


def git(args, cwd=None):
    completed = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise SourceError(f"git {' '.join(args)} failed: {detail[-1] if detail else 'no output'}")
    return completed.stdout


def has_commit(repo_dir, commit):
    return (
        subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo_dir, env=git_env(),
            capture_output=True, check=False,
        ).returncode == 0
    )  # fmt: skip


def git_cache(cache_dir, name, repo, commit):
    """A bare repository under cache_dir holding commit (cloned or fetched from repo); returns its path."""
    path = os.path.join(cache_dir, "git", f"{name}.git")
    if not os.path.isdir(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=os.path.dirname(path))
        try:
            git(["clone", "--quiet", "--bare", repo, tmp])
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if not has_commit(path, commit):
        git(["fetch", "--quiet", repo, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], cwd=path)
    if not has_commit(path, commit):
        raise SourceError(f"The pinned commit {commit} is not in {repo}: check the lock for {name}.")
    return path


def file_at(repo_dir, commit, path):
    return git(["show", f"{commit}:{path}"], cwd=repo_dir)


def write_git_bundle(repo_dir, commit, dest):
    """A git bundle at dest with the full history of commit on branch sdenv-pinned (temp, rename)."""
    git(["update-ref", f"refs/heads/{PIN_BRANCH}", commit], cwd=repo_dir)
    tmp = dest + ".part"
    git(["bundle", "create", "--quiet", tmp, f"refs/heads/{PIN_BRANCH}"], cwd=repo_dir)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, dest)


def git_bundle_head(path):
    """The commit a bundle's sdenv-pinned branch points at (git bundle list-heads needs no repository)."""
    for line in git(["bundle", "list-heads", path]).splitlines():
        sha, _, ref = line.partition(" ")
        if ref == f"refs/heads/{PIN_BRANCH}":
            return sha
    return None


def check_archive(path, spec):
    """Raise SourceError unless the archive at path reproduces the pinned tree (and sha256 when pinned)."""
    try:
        tree, _ = zip_tree_id(path)
    except TreeIdError as exc:
        raise SourceError(f"The archive {path} cannot be checked ({exc}): replace it with the pinned one.") from exc
    if tree != spec["tree"]:
        raise SourceError(
            f"The archive {path} holds git tree {tree}, the lock pins {spec['tree']} ({spec['url']}): it is not "
            "the pinned source; remove it and run again."
        )
    pinned = spec.get("sha256") or ""
    if pinned and sha256_file(path) != pinned:
        raise SourceError(f"The archive {path} has another sha256 than the lock pins ({pinned}): remove it and run again.")


def archive_cache(cache_dir, spec):
    """The pinned archive in cache_dir/archives (downloaded when absent or wrong); returns its path."""
    path = os.path.join(cache_dir, "archives", spec["file"])
    if os.path.isfile(path):
        try:
            check_archive(path, spec)
            return path
        except SourceError:
            os.replace(path, path + ".rejected")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-dl-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(spec["url"], timeout=60) as response:  # noqa: S310
            shutil.copyfileobj(response, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        check_archive(tmp, spec)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise SourceError(
            f"{spec['url']} could not be downloaded ({exc}): put an archive of that commit at {path} "
            f"(git archive --format=zip --prefix=<name>-<commit>/ <commit>) and run again."
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def archive_member(path, member):
    """Text of member (relative to the archive's top directory), or "" when absent."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.split("/", 1)[-1] == member:
                return archive.read(name).decode("utf-8")
    return ""
