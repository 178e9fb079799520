#!/usr/bin/env python3
"""make upgrade WEBUI=<tag|commit>, on the controller.

    sdenv_upgrade.py upgrade --inventory INV --webui REF [--check] [--confirm] [--live] [--limit L]
    sdenv_upgrade.py recover --inventory INV      (make rollback runs it first: finish an interrupted upgrade)

The plan: the new commit's modules/launch_utils.py, webui-macos-env.sh and requirements_versions.txt (read
with git show from the controller's cache of the lock's WebUI repository; git's url.<base>.insteadOf can point
any URL at a mirror), every sub-repository checked to serve its commit, the venv re-locked (make lock-venv's
own code) for every platform the inventory's venv-lock holds into a staging directory; printed as old -> new;
CHECK=1 stops there.

Then, per host (make's own targets, each one's output kept under the staging directory's logs/): a snapshot
labelled with both versions (make snapshot LABEL=upgrade-<old>-to-<new>), make provision, make verify (LIVE=1:
live); red -> every host this upgrade touched goes back to its snapshot (make rollback), the old lock and venv
locks go back in place, make provision (the provision record is not in a snapshot: this writes it back) and
make verify, and one sentence says what failed and where the logs are. Green keeps the new lock (the old one
stays in git history).

Every step is written to a journal (.sdenv-upgrade/journal.json beside the inventory) before it starts, so an
upgrade killed at any point is brought back to the old version, verified, by the next make upgrade or make
rollback (webui_upgrade.recovery says how). One upgrade per inventory at a time (upgrade_lock): a second one,
or a make rollback that would finish an interrupted one meanwhile, is refused naming the first. The logic
lives in module_utils (unit-tested); this file wires it.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
for path in [ROOT / "plugins" / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]:
    sys.path.insert(0, str(path))

import bundle_build  # noqa: E402
import comfyui_upgrade  # noqa: E402
import lock_text_edit  # noqa: E402
import upgrade_lock  # noqa: E402
import webui_upgrade  # noqa: E402
import yaml  # noqa: E402
from bundle_sources import SourceError, file_at, git, has_commit  # noqa: E402
from git_tree_id import zip_tree_id  # noqa: E402
from venv_lock import PYTHONS, parse_packages  # noqa: E402

WEBUI_GIT_NAME = "stable-diffusion-webui"


def say(message):
    print(f"sdenv upgrade: {message}", flush=True)


class Failed(Exception):
    """One sentence for the user; the exit status is 1."""


# --- Paths ----------------------------------------------------------------------------------------------------


class Place:
    """The inventory's lock, venv locks and the upgrade's own directory beside the inventory."""

    def __init__(self, inventory):
        self.inventory = Path(inventory).resolve()
        self.lock = self.inventory.parent / "group_vars" / "all" / "lock.yml"
        self.venv_lock = self.lock.parent / "venv-lock"
        self.work = self.inventory.parent / ".sdenv-upgrade"
        self.journal = self.work / "journal.json"
        self.old_lock = self.work / "old" / "lock.yml"
        self.old_venv_lock = self.work / "old" / "venv-lock"
        self.new_lock = self.work / "new" / "lock.yml"
        self.new_venv_lock = self.work / "new" / "venv-lock"
        self.logs = self.work / "logs"


def write_atomic(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)


def copy_dir_atomic(source, dest):
    """dest becomes a copy of source (or disappears when source does not exist), by rename."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    if Path(source).is_dir():
        shutil.copytree(source, tmp)
    else:
        tmp.mkdir(parents=True)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def read_journal(place):
    try:
        return json.loads(place.journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_journal(place, journal):
    write_atomic(place.journal, json.dumps(journal, indent=2, sort_keys=True) + "\n")


# --- The plan -------------------------------------------------------------------------------------------------


def resolve(cache, repo, ref, variable="WEBUI", git_name=WEBUI_GIT_NAME):
    """(commit, version) of ref (a tag, branch or commit) in the lock's WebUI (or ComfyUI) repository."""
    # Its own cache, named by URL: make bundle's cache of the same name holds only what the lock pinned.
    path = os.path.join(
        cache, "git", f"{git_name}-upgrade-{hashlib.sha256(repo.encode()).hexdigest()[:12]}.git"
    )
    if not os.path.isdir(path):
        git(["clone", "--quiet", "--bare", repo, path])
    if not has_commit(path, ref):
        git(["fetch", "--quiet", repo, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], cwd=path)
    try:
        commit = git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=path).strip()
    except SourceError as exc:
        raise Failed(
            f"{variable}={ref} is not a tag, branch or commit of {repo}: give one of its tags or commits."
        ) from exc
    try:
        version = git(["describe", "--tags", commit], cwd=path).strip()
    except SourceError:
        version = ref if ref != commit else commit[:10]
    return commit, version, path


def serves_checker(cache):
    seen = {}

    def serves(repo, commit):
        """True: repo has commit; False: repo answers without it; None: repo could not be reached. Only the
        commit is asked for (a mirror may lack large files; the provision's own clone checks the tree)."""
        if (repo, commit) not in seen:
            path = os.path.join(
                cache, "git", "upgrade-" + hashlib.sha256(repo.encode()).hexdigest()[:12] + ".git"
            )
            try:
                # Commits and trees only (--filter=blob:none): the question is whether the commit is there, and
                # a mirror may lack large files. The upload-pack option lets a local mirror honour the filter.
                upload = ["--upload-pack", "git -c uploadpack.allowFilter=true upload-pack"]
                refs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
                if os.path.isdir(path) and not has_commit(path, commit):
                    try:
                        git(["fetch", "--quiet", *upload, repo, *refs], cwd=path)
                    except SourceError:
                        shutil.rmtree(path)  # a cache that cannot be brought up to date is cloned again
                if not os.path.isdir(path):
                    git(["clone", "--quiet", "--bare", "--filter=blob:none", *upload, repo, path])
                seen[repo, commit] = has_commit(path, commit)
            except SourceError as exc:
                seen[repo, commit] = None
                say(f"{repo}: {exc}")
        return seen[repo, commit]

    return serves


def archive_tree(url):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "archive.zip")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise Failed(
                f"The new archive {url} could not be downloaded ({exc}): check the network."
            ) from exc
        return zip_tree_id(path)[0]


def venv_lock_changes(old_dir, new_dir):
    """One line per lock file: the packages whose version changed, old -> new."""
    lines = []
    for new in sorted(Path(new_dir).glob("*.txt")):
        old = Path(old_dir) / new.name
        before = parse_packages(old.read_text(encoding="utf-8")) if old.is_file() else {}
        after = parse_packages(new.read_text(encoding="utf-8"))
        moved = [
            f"{after[n]['name'] if n in after else before[n]['name']} "
            f"{before[n]['version'] if n in before else '(none)'} -> {after[n]['version'] if n in after else '(none)'}"
            for n in sorted(set(before) | set(after))
            if (before.get(n) or {}).get("version") != (after.get(n) or {}).get("version")
        ]
        lines.append(f"venv lock {new.name}: " + (", ".join(moved) if moved else "the same versions"))
    return lines


def make_plan(args, place):
    """Print the plan; stage the new lock and venv locks under place.work/new. Returns (journal, changed)."""
    text = place.lock.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    lock = document["sdenv_lock"]
    commit, version, repo_dir = resolve(args.cache, lock["webui"]["repo"], args.webui)
    say(f"reading the pins of {version} ({commit[:10]}) ...")
    launch_utils = file_at(repo_dir, commit, "modules/launch_utils.py").decode()
    launcher, steps = webui_upgrade.launcher_pins(launch_utils), webui_upgrade.build_steps(launch_utils)
    try:  # the current commit's, for the build steps' old -> new (a commit the cache lacks: '?')
        old_source = file_at(repo_dir, lock["webui"]["commit"], "modules/launch_utils.py").decode()
        old_steps = webui_upgrade.build_steps(old_source)
    except (SourceError, webui_upgrade.UpgradeError):
        old_steps = None
    try:
        macos = webui_upgrade.macos_torch_commands(file_at(repo_dir, commit, "webui-macos-env.sh").decode())
    except SourceError:
        macos = {}
    requirements = file_at(repo_dir, commit, "requirements_versions.txt").decode()
    wanted, unread, index_url = webui_upgrade.wanted_values(
        launcher, macos, requirements, version, commit, steps["build"]
    )
    say("checking that every repository still serves its commit ...")
    changes, notes = webui_upgrade.plan_changes(
        lock,
        wanted,
        lambda path: lock_text_edit.get_value(document, path),
        serves_checker(args.cache),
        archive_tree,
        strict=not args.check,
    )
    extra = []
    if index_url:
        extra.append(
            f"the launcher installs torch from {index_url}; the lock keeps each platform's own index_url"
            " (empty: PyPI's build)"
        )
    extra += webui_upgrade.build_notes(
        old_steps,
        steps,
        lock.get("webui_venv") or {},
        webui_upgrade.requirement_pin(requirements, "setuptools"),
    )
    new_text = lock_text_edit.set_values(text, [(c.path, c.new) for c in changes], yaml.safe_load)
    shutil.rmtree(place.work / "new", ignore_errors=True)
    write_atomic(place.new_lock, new_text)
    relocked = []
    if args.relock:
        say("re-locking the venv for every platform its venv-lock holds (make lock-venv) ...")
        try:
            place.new_venv_lock.mkdir(parents=True, exist_ok=True)
            platforms = webui_upgrade.locked_platforms(p.name for p in place.venv_lock.glob("*.txt"))
            bundle_build.lock_venv(
                yaml.safe_load(new_text)["sdenv_lock"],
                str(place.new_venv_lock),
                args.cache,
                args.index_url,
                platforms,
                reuse_dir=str(place.venv_lock),
            )
            relocked = venv_lock_changes(place.venv_lock, place.new_venv_lock)
        except bundle_build.BUNDLE_ERRORS as exc:
            if not args.check:
                raise Failed(f"The venv could not be re-locked for {version}: {exc}") from exc
            relocked = [f"the venv could not be re-locked: {exc}"]
    else:
        copy_dir_atomic(place.venv_lock, place.new_venv_lock)
    old_version = lock["webui"].get("version") or lock["webui"]["commit"][:10]
    print(webui_upgrade.plan_text(changes, notes, unread, old_version, version, extra + relocked), flush=True)
    journal = {
        "step": "planned",
        "from": {"commit": lock["webui"]["commit"], "version": old_version},
        "to": {"commit": commit, "version": version},
        "label": webui_upgrade.snapshot_label(old_version, version),
        "hosts": {},
    }
    return journal, bool(changes)


# --- The plan for ComfyUI (make upgrade COMFYUI=) ------------------------------------------------------------


def apps_of(args):
    """{host: sdenv_apps} of the hosts the upgrade would touch, as the inventory sets it (ansible-inventory
    reads group_vars and host variables; unset: settings.yml's default, the WebUI alone)."""
    argv = [str(ROOT / ".venv" / "bin" / "ansible-inventory"), "-i", str(args.inventory), "--list"]
    if args.limit:
        argv += ["--limit", args.limit]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise Failed(f"The inventory {args.inventory} could not be read: {completed.stderr.strip()[-300:]}")
    hostvars = json.loads(completed.stdout).get("_meta", {}).get("hostvars", {})
    return {host: values.get("sdenv_apps") for host, values in hostvars.items()}


def comfyui_locks(directory):
    """{file name: parsed packages} of ComfyUI's venv locks in a venv-lock directory."""
    return {
        p.name: parse_packages(p.read_text(encoding="utf-8"))
        for p in sorted((Path(directory) / bundle_build.COMFYUI_LOCK_DIR).glob("*.txt"))
    }


def make_comfyui_plan(args, place):
    """make_plan for ComfyUI: its commit's requirements.txt and pyproject.toml checked against the lock's torch
    and Pythons, ComfyUI's venv re-locked for every platform it was locked for while the WebUI's locks are copied
    byte for byte; staged under place.work/new like the WebUI's. Returns (journal, changed)."""
    text = place.lock.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    lock = document["sdenv_lock"]
    if "comfyui" not in lock:
        raise Failed(
            f"{place.lock} pins no ComfyUI (sdenv_lock.comfyui): add its pin (see the lock.yml this toolkit"
            " ships) before moving it with COMFYUI=."
        )
    refusal = comfyui_upgrade.apps_refusal(apps_of(args))
    if refusal:
        raise Failed(refusal)
    old = lock["comfyui"]
    commit, _, repo_dir = resolve(
        args.cache, old["repo"], args.comfyui, "COMFYUI", bundle_build.COMFYUI_GIT_NAME
    )
    try:
        tag = git(["describe", "--tags", "--exact-match", commit], cwd=repo_dir).strip()
    except SourceError:
        tag = ""

    def at(commit_id, name):
        try:
            return file_at(repo_dir, commit_id, name).decode()
        except SourceError:
            return ""

    version = comfyui_upgrade.version_name(tag, at(commit, "comfyui_version.py"), commit)
    say(f"reading ComfyUI's pins at {version} ({commit[:10]}) ...")
    new_requirements = at(commit, "requirements.txt")
    if not new_requirements:
        raise Failed(f"ComfyUI {version} has no requirements.txt: it is not shaped like ComfyUI's tree.")
    torch_pins = (lock.get("comfyui_venv") or {}).get("torch") or {}
    notes = comfyui_upgrade.check_torch(new_requirements, torch_pins)
    comfyui_upgrade.check_python(
        at(commit, "pyproject.toml"), sorted({p for v in PYTHONS.values() for p in v})
    )
    notes += comfyui_upgrade.requires_notes(
        (lock.get("comfyui_venv") or {}).get("requires") or [], new_requirements
    )
    requirement_lines = comfyui_upgrade.requirement_changes(
        at(old["commit"], "requirements.txt"), new_requirements
    )
    pins = comfyui_upgrade.pin_changes(lock, commit, version)
    new_text = lock_text_edit.set_values(text, [(path, new) for path, _, new in pins], yaml.safe_load)
    shutil.rmtree(place.work / "new", ignore_errors=True)
    write_atomic(place.new_lock, new_text)
    # Every file of the venv-lock directory as it is (the WebUI's locks byte for byte), then ComfyUI's re-locked.
    copy_dir_atomic(place.venv_lock, place.new_venv_lock)
    if args.relock:
        say("re-locking ComfyUI's venv for every platform its venv-lock holds (make lock-venv's code) ...")
        platforms = webui_upgrade.locked_platforms(
            p.name for p in (place.venv_lock / bundle_build.COMFYUI_LOCK_DIR).glob("*.txt")
        )
        try:
            bundle_build.lock_comfyui_venv(
                yaml.safe_load(new_text)["sdenv_lock"],
                str(place.new_venv_lock),
                args.cache,
                args.index_url,
                platforms,
                requirements=new_requirements.encode(),
                reuse_dir=str(place.venv_lock),
            )
        except bundle_build.BUNDLE_ERRORS as exc:
            if not args.check:
                raise Failed(f"ComfyUI's venv could not be re-locked for {version}: {exc}") from exc
            notes.append(f"ComfyUI's venv could not be re-locked: {exc}")
        else:
            notes += venv_lock_changes(
                place.venv_lock / bundle_build.COMFYUI_LOCK_DIR,
                place.new_venv_lock / bundle_build.COMFYUI_LOCK_DIR,
            )
    torch = comfyui_upgrade.torch_lines(comfyui_locks(place.venv_lock), comfyui_locks(place.new_venv_lock))
    old_version = old.get("version") or old["commit"][:10]
    print(comfyui_upgrade.plan_text(pins, requirement_lines, torch, notes, old_version, version), flush=True)
    journal = {
        "step": "planned",
        "app": "comfyui",
        "from": {"commit": old["commit"], "version": f"ComfyUI {old_version}"},
        "to": {"commit": commit, "version": f"ComfyUI {version}"},
        "label": webui_upgrade.snapshot_label(f"comfyui-{old_version}", version),
        "hosts": {},
    }
    return journal, bool(pins)


# --- The flow -------------------------------------------------------------------------------------------------


def run_make(args, place, target, host, log_name, **variables):
    """make TARGET for one host, its output shown and kept in logs/<log_name>.log; True when it passed."""
    place.logs.mkdir(parents=True, exist_ok=True)
    log = place.logs / f"{log_name}.log"
    argv = ["make", "--no-print-directory", "-C", str(ROOT), target, f"INVENTORY={args.inventory}"]
    argv += [f"LIMIT={host}"] + [f"{k}={v}" for k, v in variables.items() if v]
    if args.args:
        argv.append(f"ARGS={args.args}")
    env = {**os.environ, "SDENV_UPGRADE_INSIDE": "1"}
    for name in ("LIMIT", "ARGS", "CHECK", "CONFIRM", "LIVE", "LABEL", "TO", "PATHS", "WEBUI", "COMFYUI"):
        env.pop(f"SDENV_VAR_{name}", None)
        env.pop(name, None)
    env.pop("MAKEFLAGS", None)
    env.pop("MAKEOVERRIDES", None)
    say(f"{host}: make {target} (log: {log})")
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            # Line by line, also into a pipe or a file (make upgrade | tee): where a run stopped shows at once.
            sys.stdout.write(line)
            sys.stdout.flush()
            out.write(line)
            out.flush()
        process.wait()
    return process.returncode == 0


def hosts_of(args):
    argv = [str(ROOT / ".venv" / "bin" / "ansible"), "all", "-i", str(args.inventory), "--list-hosts"]
    if args.limit:
        argv += ["--limit", args.limit]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    hosts = [line.strip() for line in completed.stdout.splitlines()[1:] if line.strip()]
    if completed.returncode != 0 or not hosts:
        raise Failed(
            f"The inventory {args.inventory} names no host{' matching ' + args.limit if args.limit else ''}."
        )
    return hosts


def put_lock(place, lock_file, venv_dir):
    write_atomic(place.lock, Path(lock_file).read_text(encoding="utf-8"))
    copy_dir_atomic(venv_dir, place.venv_lock)


def restore(args, place, journal, why):
    """Every host this upgrade touched back to its snapshot, the old lock back, provisioned from it, verified.
    Returns True if green."""
    action, hosts = webui_upgrade.recovery(journal)
    if action == "discard":
        shutil.rmtree(place.work, ignore_errors=True)
        return True
    journal["step"] = "restoring"
    write_journal(place, journal)
    ok = True
    for host in hosts:
        ok = (
            run_make(args, place, "rollback", host, f"{host}-rollback", TO=journal["label"], CONFIRM="yes")
            and ok
        )
    put_lock(place, place.old_lock, place.old_venv_lock)
    # The provision record is not part of a snapshot: provisioning the old lock on the rolled-back tree writes
    # it back (the record would still name the new commit, and verify would say so) and changes nothing else.
    for host in hosts:
        ok = run_make(args, place, "provision", host, f"{host}-provision-after-rollback") and ok
    for host in journal.get("hosts", {}):
        ok = run_make(args, place, "verify", host, f"{host}-verify-after-rollback") and ok
    if ok:
        say(
            f"{why} Every host is back at {journal['from']['version']} and verified; the old lock is in place. "
            f"Logs: {place.logs}"
        )
        journal["step"] = "restored"
        write_journal(place, journal)
        keep = place.work.with_name(".sdenv-upgrade-last")
        shutil.rmtree(keep, ignore_errors=True)
        os.replace(place.work, keep)  # the logs stay readable; the next upgrade starts clean
        say(f"the logs of that upgrade are kept in {keep / 'logs'}")
    else:
        say(
            f"{why} Rolling back did not end green: see {place.logs}; the journal is kept, so make rollback or"
            " make upgrade tries again."
        )
    return ok


def recover(args, place):
    journal = read_journal(place)
    action, _ = webui_upgrade.recovery(journal)
    if action == "none":
        return 0
    say(
        f"an upgrade {journal['from']['version']} -> {journal['to']['version']} was interrupted at step"
        f" {journal['step']}: bringing every host back to {journal['from']['version']} first."
    )
    return 0 if restore(args, place, journal, "The interrupted upgrade was undone.") else 1


def recover_before_rollback(args, place):
    """make rollback's first step. After undoing an interrupted upgrade it stops make rollback (exit 3): its
    default TO=latest would now be the snapshot taken just before that undo, the half-upgraded state. With no
    journal it takes no lock (make rollback needs nothing beside the inventory then)."""
    if webui_upgrade.recovery(read_journal(place))[0] == "none":
        return 0
    with upgrade_lock.held(place.inventory.parent, "make rollback (finishing an interrupted upgrade)"):
        if recover(args, place) != 0:
            return 1
    say("make rollback stopped there: nothing else was rolled back. Run it again to roll back further.")
    return 3


def upgrade(args, place):
    if read_journal(place) and recover(args, place) != 0:
        return 1
    journal, changed = (make_comfyui_plan if args.comfyui else make_plan)(args, place)
    if args.check:
        say("CHECK=1: that is the plan only; nothing was changed.")
        shutil.rmtree(place.work, ignore_errors=True)
        return 0
    if not args.confirm:
        if not sys.stdin.isatty():
            shutil.rmtree(place.work, ignore_errors=True)
            raise Failed("Not confirmed: nothing was changed. Run with CONFIRM=yes to apply this plan.")
        if input("Type yes to apply this plan to every host: ").strip() != "yes":
            shutil.rmtree(place.work, ignore_errors=True)
            raise Failed("Not confirmed: nothing was changed.")
    hosts = hosts_of(args)
    copy_dir_atomic(place.venv_lock, place.old_venv_lock)
    write_atomic(place.old_lock, place.lock.read_text(encoding="utf-8"))
    journal["hosts"] = dict.fromkeys(hosts, "waiting")
    write_journal(place, journal)
    # From here on the journal says "locked": the new lock is (being) put in place, the old one saved.
    journal["step"] = "locked"
    write_journal(place, journal)
    put_lock(place, place.new_lock, place.new_venv_lock)
    for host in hosts:
        steps = (
            ("snapshot", "snapshot", {"LABEL": journal["label"]}),
            ("provision", "provision", {}),
            ("verify", "verify", {"LIVE": "1" if args.live else ""}),
        )
        for step, target, variables in steps:
            journal["hosts"][host] = step
            write_journal(place, journal)
            if not run_make(args, place, target, host, f"{host}-{step}", **variables):
                if step == "snapshot":
                    journal["hosts"][host] = "snapshot"  # not taken: nothing to roll back on this host
                restore(args, place, journal, f"make {target} failed on {host}.")
                return 1
        journal["hosts"][host] = "done"
        write_journal(place, journal)
    shutil.rmtree(place.work, ignore_errors=True)
    say(
        f"every host is at {journal['to']['version']} and verified; lock.yml pins it now"
        f"{' (nothing changed in it)' if not changed else ''}. The old lock stays in git history: commit this one."
    )
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog="sdenv_upgrade")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("upgrade", "recover"):
        command = sub.add_parser(name)
        command.add_argument("--inventory", required=True)
        command.add_argument("--limit", default="")
        command.add_argument("--args", default="")
        # SDENV_UPGRADE_CACHE: another cache (the tests use a throwaway one).
        command.add_argument(
            "--cache", default=os.environ.get("SDENV_UPGRADE_CACHE") or os.path.expanduser("~/.cache/sdenv")
        )
    up = sub.choices["upgrade"]
    # One app per upgrade: a red verify then names one change, and the snapshot's label its two versions.
    app = up.add_mutually_exclusive_group(required=True)
    app.add_argument("--webui", default="")
    app.add_argument("--comfyui", default="")
    up.add_argument("--check", action="store_true")
    up.add_argument("--confirm", action="store_true")
    up.add_argument("--live", action="store_true")
    up.add_argument("--index-url", default="")
    up.add_argument("--no-relock", dest="relock", action="store_false")
    args = parser.parse_args(argv)
    place = Place(args.inventory)
    if not place.lock.is_file():
        print(
            f"sdenv upgrade: there is no lock {place.lock}: the inventory's group_vars/all must hold lock.yml."
        )
        return 2
    try:
        if args.command == "recover":
            return recover_before_rollback(args, place)
        # One upgrade per inventory at a time: its journal and lock.yml edits must not interleave with another's.
        what = f"COMFYUI={args.comfyui}" if args.comfyui else f"WEBUI={args.webui}"
        with upgrade_lock.held(place.inventory.parent, f"make upgrade {what}"):
            return upgrade(args, place)
    except (
        Failed,
        upgrade_lock.UpgradeLocked,
        webui_upgrade.UpgradeError,
        comfyui_upgrade.ComfyUpgradeError,
        lock_text_edit.LockTextError,
        SourceError,
    ) as exc:
        print(f"sdenv upgrade: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
