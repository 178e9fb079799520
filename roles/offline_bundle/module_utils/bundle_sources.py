"""Where `make lock-venv` and `make bundle` get the pinned upstream sources on the controller.

- Git: a bare cache per repository (`<cache>/git/<name>.git`), cloned once and fetched only when the pinned
  commit is missing. Git's own `url.<base>.insteadOf` configuration redirects a lock URL to a mirror, so a
  controller without GitHub can use any clone that has the commits.
- Archives (CLIP, open_clip): `<cache>/archives/<file>`, by role webui's own locate_archive: downloaded from
  the lock's URL only when no file there reproduces the pinned git tree (GitHub's bytes are not stable;
  `git archive --format=zip --prefix=<name>-<commit>/ <commit>` from a clone gives an equally valid one).
"""

import os
import shutil
import subprocess
import tempfile
import zipfile

# Controller only: the CLI (files/sdenv_bundle.py) puts every module_utils directory on sys.path.
from webui_git_tree import git_env
from webui_venv_plan import VenvError, locate_archive

PIN_BRANCH = "sdenv-pinned"


class SourceError(Exception):
    """A pinned source that cannot be had, named in one sentence."""


def git(args, cwd=None):
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
    )
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
    missing = missing_in_tree(path, commit)
    if missing:
        raise SourceError(
            f"The copy of {repo} lacks {len(missing)} file(s) of the pinned commit {commit[:10]} (e.g. {missing[0]}): "
            "it is a partial mirror; use a complete clone (git's url.<base>.insteadOf can point the lock's URL at one)."
        )
    return path


def missing_in_tree(repo_dir, commit):
    """Paths of the pinned commit's tree whose objects the repository lacks (a partial mirror)."""
    listing = git(["ls-tree", "-r", "-z", commit], cwd=repo_dir)
    entries = [e for e in listing.split("\0") if e]
    objects = "".join(e.split()[2] + "\n" for e in entries if e.split()[1] == "blob")
    completed = subprocess.run(["git", "cat-file", "--batch-check"], cwd=repo_dir, env=git_env(), input=objects,
                               capture_output=True, text=True, check=False)  # fmt: skip
    missing = {line.split()[0] for line in completed.stdout.splitlines() if line.endswith(" missing")}
    return [e.split("\t", 1)[1] for e in entries if e.split()[2] in missing]


def file_at(repo_dir, commit, path):
    """The bytes of path at commit, exactly as committed (line endings included: upstream's
    requirements_versions.txt has CRLF, and its sha256 is one of the lock's inputs)."""
    completed = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo_dir, env=git_env(), capture_output=True,
                               check=False)  # fmt: skip
    if completed.returncode != 0:
        raise SourceError(
            f"{path} is not in {commit[:10]}: {completed.stderr.decode(errors='replace').strip()}"
        )
    return completed.stdout


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
            git(
                ["fetch", "--quiet", "--no-tags", "--depth=1", f"--upload-pack={upload}", source, refspec],
                cwd=tmp,
            )
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


def archive_cache(cache_dir, spec):
    """The pinned archive in cache_dir/archives (downloaded when absent or not the pinned tree): its path."""
    try:
        return locate_archive(spec, "", os.path.join(cache_dir, "archives"))[0]
    except VenvError as exc:
        raise SourceError(
            f"{exc} Or put an archive of that commit at {os.path.join(cache_dir, 'archives', spec['file'])} "
            "(git archive --format=zip --prefix=<name>-<commit>/ <commit>) and run again."
        ) from exc


def archive_member(path, member):
    """Text of member (relative to the archive's top directory), or "" when absent."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.split("/", 1)[-1] == member:
                return archive.read(name).decode("utf-8")
    return ""
