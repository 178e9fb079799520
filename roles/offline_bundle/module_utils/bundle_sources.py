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


def write_git_mirror(repo_dir, commit, dest):
    """A bare repository at dest whose branch sdenv-pinned is commit, with the commit's full history; when
    the source lacks some history objects (a partial mirror), only the commit itself (shallow). Written to a
    sibling and renamed into place. Returns "full" or "shallow"."""
    git(["update-ref", f"refs/heads/{PIN_BRANCH}", commit], cwd=repo_dir)
    tmp = dest + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    refspec = f"refs/heads/{PIN_BRANCH}:refs/heads/{PIN_BRANCH}"
    source = "file://" + os.path.abspath(repo_dir)
    history = "full"
    try:
        git(["init", "--quiet", "--bare", tmp])
        try:
            git(["fetch", "--quiet", "--no-tags", source, refspec], cwd=tmp)
        except SourceError:
            history = "shallow"
            shutil.rmtree(tmp)
            git(["init", "--quiet", "--bare", tmp])
            upload = "git -c uploadpack.allowAnySHA1InWant=true upload-pack"
            git(["fetch", "--quiet", "--no-tags", "--depth=1", f"--upload-pack={upload}", source, refspec], cwd=tmp)
        git(["symbolic-ref", "HEAD", f"refs/heads/{PIN_BRANCH}"], cwd=tmp)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return history


def git_mirror_head(path):
    """The commit a bundle's bare repository pins (its sdenv-pinned branch), or None."""
    if not os.path.isdir(path):
        return None
    completed = subprocess.run(
        ["git", "-c", f"safe.directory={os.path.abspath(path)}", "rev-parse", "--verify", "--quiet",
         f"refs/heads/{PIN_BRANCH}^{{commit}}"],
        cwd=path, env=git_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    return completed.stdout.strip() or None


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
