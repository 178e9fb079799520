"""Snapshots for real, as root: churn + rollback + undo, kill -9 during snapshot and rollback, bad inputs,
and the make targets end to end against a throwaway user's WebUI-shaped tree."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import snapshot_store as ss
from sdenv_testlib import ROOT, make_argv
from snapshot_fixtures import tree_state
from snapshot_store import snapshotter

STORE_PY = ROOT / "roles" / "snapshot" / "module_utils" / "snapshot_store"


state = tree_state


def build_tree(root: Path, n_files: int, model_bytes: int, rng: random.Random) -> list:
    dirs = [root / "venv" / "lib" / f"pkg{i}" for i in range(60)]
    for d in dirs:
        d.mkdir(parents=True)
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    (root / "outputs" / "empty").mkdir(parents=True)
    files = []
    for i in range(n_files):
        p = dirs[i % len(dirs)] / f"m{i}.py"
        p.write_bytes(rng.randbytes(rng.randrange(10, 3000)))
        os.chown(p, 12345 + i % 3, 23456)
        if i % 7 == 0:
            os.chmod(p, 0o755)  # noqa: S103 - executable bits are part of what a rollback restores
        files.append(p)
    for i in range(40):
        os.symlink(f"m{i}.py", dirs[i % len(dirs)] / f"link{i}")
    os.symlink("/etc", root / "escape")
    (root / "models" / "Stable-diffusion" / "model.safetensors").write_bytes(rng.randbytes(model_bytes))
    return files


def pip_churn(root: Path, files: list, rng: random.Random, model_bytes: int) -> None:
    """Like a pip upgrade: a third of the files modified, a third removed, as many added; a model replaced."""
    k = len(files) // 3
    for p in files[:k]:
        p.write_bytes(rng.randbytes(rng.randrange(10, 3000)))
    for p in files[k : 2 * k]:
        p.unlink()
    new = root / "venv" / "lib" / "newpkg"
    new.mkdir()
    for i in range(k):
        (new / f"n{i}.py").write_text(f"# new {i}\n")
    os.chmod(files[-1], 0o600)
    os.rmdir(root / "outputs" / "empty")
    (root / "models" / "Stable-diffusion" / "model.safetensors").write_bytes(rng.randbytes(model_bytes))


@pytest.fixture
def tree(tmp_path):
    live = tmp_path / "webui"
    live.mkdir()
    return ss.Store(str(tmp_path / "store")), live


@pytest.mark.parametrize("walk", ["serial", "split"])
def test_pip_like_churn_rollback_is_identical_and_can_be_undone(tree, monkeypatch, walk):
    # "split": the walk forks its read-only checker, as it does on trees of 5,000+ entries.
    monkeypatch.setattr(snapshotter, "SPLIT_MIN_LINES", 2 if walk == "split" else 10**9)
    store, live = tree
    rng = random.Random(1)
    files = build_tree(live, 3000, 3 << 20, rng)
    time.sleep(2.1)  # past the racy window so the before-rollback snapshot uses the stat cache for real
    base = state(live)
    snap = store.snapshot([str(live)], label="base")
    pip_churn(live, files, rng, 3 << 20)
    churned = state(live)
    res = store.rollback(snap["id"])
    assert res["stats"]["removed"] >= 1000 and res["stats"]["written"] >= 1000
    assert state(live) == base
    undo = store.rollback(res["before"])
    assert undo["changed"]
    assert state(live) == churned
    assert store.check(deep=True)["ok"]


def _run_and_kill(argv, delay):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    return killed


def test_kill9_during_snapshot_and_rollback_leaves_old_or_new_files_and_a_clean_check(tree):
    store, live = tree
    rng = random.Random(2)
    files = build_tree(live, 1500, 24 << 20, rng)
    a_id = store.snapshot([str(live)], label="a")["id"]
    a_state = state(live)
    pip_churn(live, files, rng, 24 << 20)
    b_id = store.snapshot([str(live)], label="b")["id"]
    b_state = state(live)
    cli = [sys.executable, str(STORE_PY), store.path]
    t = time.monotonic()
    subprocess.run([*cli, "rollback", a_id], check=True, capture_output=True)
    rollback_s = time.monotonic() - t
    subprocess.run([*cli, "rollback", b_id], check=True, capture_output=True)

    def invalidate_stat_cache():
        # Same mtime, new ctime: every file is read and stored again, so a snapshot has real work to kill.
        for dirpath, _, filenames in os.walk(live):
            for n in filenames:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    invalidate_stat_cache()
    t = time.monotonic()
    subprocess.run([*cli, "snapshot", str(live)], check=True, capture_output=True)
    snapshot_s = time.monotonic() - t
    kills = 0
    for i in range(24):
        if i % 3 == 0:
            # A snapshot killed at a random moment: the live tree is untouched, the store only gains garbage.
            invalidate_stat_cache()
            kills += _run_and_kill([*cli, "snapshot", str(live)], rng.uniform(0.1, 0.9) * snapshot_s)
            assert state(live) == b_state
        else:
            kills += _run_and_kill([*cli, "rollback", a_id], rng.uniform(0.1, 0.9) * rollback_s)
            now = state(live)
            for path, entry in now.items():
                if ss.TMP_PREFIX in path:
                    continue  # journaled temp file: the next operation removes it (checked below)
                want = {x[path][0] for x in (a_state, b_state) if path in x}
                assert entry[0] in want, f"{path} is neither its old nor its new version after kill -9"
            for path in set(a_state) & set(b_state):
                if a_state[path][0] == b_state[path][0] and a_state[path][0] != "d":
                    assert path in now, f"{path} (same in both versions) vanished after kill -9"
        check = store.check()
        assert check["ok"], check["errors"]
        # Converge back to B for the next round. This next operation removes whatever the killed one left
        # (temp files, files a journal names, an interrupted rollback's temp files): no garbage outlives it.
        subprocess.run([*cli, "rollback", b_id], check=True, capture_output=True)
        assert state(live) == b_state
        check = store.check()
        assert check["ok"] and check["interrupted_runs"] == check["interrupted_rollbacks"] == 0, check
        assert set(check["garbage"].values()) == {0}, (i, check["garbage"])
    assert kills >= 20, f"only {kills} of 24 runs were still going when killed"
    assert store.check()["ok"]
    pruned = store.prune(
        {"keep_last": 2, "keep_hourly_hours": 0, "keep_daily_days": 0, "keep_weekly_weeks": 1}
    )
    assert pruned["changed"]
    c = store.check(deep=True)
    assert c["ok"] and c["garbage"]["bytes"] == 0 and c["garbage"]["tmp_files"] == 0
    store.rollback(a_id if a_id in [s["id"] for s in store.list()] else "latest")


@pytest.fixture
def small_tmpfs(tmp_path):
    mounts = []

    def mount(name, options):
        d = tmp_path / name
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "sdenv-test", str(d)], check=True)
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk_fails_cleanly_and_records_nothing(tree, small_tmpfs):
    _, live = tree
    build_tree(live, 200, 12 << 20, random.Random(3))
    full = small_tmpfs("full", "size=6m")
    store = ss.Store(str(full / "store"))
    with pytest.raises(ss.SnapshotError, match="ran out of disk space"):
        store.snapshot([str(live)])
    assert store.list() == []
    assert store.check()["ok"]
    assert os.listdir(store.tmpdir) == [], "an interrupted (not killed) snapshot removes its temp files"


def test_unwritable_store_is_refused_with_one_sentence(tree, small_tmpfs):
    _, live = tree
    ro = small_tmpfs("ro", "size=1m,ro")
    with pytest.raises(ss.SnapshotError, match="is not writable"):
        ss.Store(str(ro / "store")).snapshot([str(live)])


def test_symlink_escaping_the_root_is_never_followed(tree):
    store, live = tree
    build_tree(live, 10, 1000, random.Random(4))
    snap = store.snapshot([str(live)])
    listing = store.read_tree_map(snap["manifest"]["roots"][0]["tree"])
    assert listing["escape"][1] == "l" and not any(p.startswith("escape/") for p in listing)
    with pytest.raises(ss.SnapshotError, match="beyond the symlink"):
        store.rollback(snap["id"], [str(live / "escape" / "passwd")])
    with pytest.raises(ss.SnapshotError, match="outside the snapshot's roots"):
        store.rollback(snap["id"], ["/etc/passwd"])


@pytest.fixture
def webui_user(throwaway_user):
    # pytest's tmp_path is 0700 root: the user's home goes where that user can reach it.
    base = Path(tempfile.mkdtemp(prefix="sdenv-snapshot-test-", dir="/var/tmp"))
    os.chmod(base, 0o755)  # noqa: S103 - the dummy user must reach its home
    home = base / "home"
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/bash", throwaway_user], check=True)
    try:
        yield _webui_tree(home, throwaway_user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _webui_tree(home, throwaway_user):
    webui = home / "stable-diffusion-webui"
    webui.mkdir()
    (webui / "launch.py").write_text("import time\ntime.sleep(120)\n")
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    (webui / "models" / "Stable-diffusion" / "m.safetensors").write_bytes(os.urandom(2 << 20))
    (webui / "venv" / "lib").mkdir(parents=True)
    for i in range(200):
        (webui / "venv" / "lib" / f"f{i}.py").write_text(f"x = {i}\n")
    (home / ".zprofile").write_text('eval "$(/opt/homebrew/bin/brew shellenv)"\n')
    subprocess.run(["chown", "-R", f"{throwaway_user}:{throwaway_user}", str(home)], check=True)
    env = {"GIT_CONFIG_GLOBAL": "/dev/null"}
    for argv in (
        ["git", "init", "-q"],
        ["git", "add", "launch.py"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "c"],
    ):
        subprocess.run(
            ["runuser", "-u", throwaway_user, "--", *argv], cwd=webui, check=True, env={**os.environ, **env}
        )
    return home, webui


def test_make_targets_end_to_end(tmp_path, test_inventory, webui_user, make_target):
    home, webui = webui_user
    inv = test_inventory(
        sdenv_user_home=str(home),
        sdenv_webui_dir=str(webui),
        sdenv_snapshot_store=str(tmp_path / "store"),
    )
    r = make_target("snapshot", inv, LABEL="base")
    assert r.returncode == 0, r
    assert "Snapshot " in r.output
    store = ss.Store(str(tmp_path / "store"))
    (base,) = store.list()
    m = store.load_manifest(base["id"])
    assert m["facts"]["webui"]["dirty"] is False and len(m["facts"]["webui"]["commit"]) == 40
    assert str(webui / "models" / "Stable-diffusion" / "m.safetensors") in m["facts"]["models"]
    assert m["facts"]["lock_digest"] and m["label"] == "base"

    r = make_target("snapshot", inv, LABEL="../x")
    assert (
        r.returncode != 0 and "make's LABEL= sets sdenv_snapshot_label to '../x': expected 1-64" in r.output
    )
    assert len(store.list()) == 1

    r = make_target("snapshots", inv)
    assert r.returncode == 0 and base["id"] in r.output

    (webui / "venv" / "lib" / "f1.py").write_text("changed\n")
    (webui / "venv" / "lib" / "f2.py").unlink()
    (webui / "venv" / "lib" / "new.py").write_text("new\n")
    (home / ".zprofile").write_text("broken\n")

    r = make_target("rollback", inv, TO=base["id"])
    assert r.returncode != 0 and "Not confirmed: nothing was changed" in r.output
    assert (webui / "venv" / "lib" / "new.py").exists()

    webui_proc = subprocess.Popen([sys.executable, "launch.py"], cwd=webui)
    try:
        r = make_target("rollback", inv, TO=base["id"], CONFIRM="yes")
        assert r.returncode != 0 and f"The WebUI is running from {webui}" in r.output
        assert (webui / "venv" / "lib" / "new.py").exists()
    finally:
        webui_proc.kill()
        webui_proc.wait()

    r = make_target("rollback", inv, TO="nope", CONFIRM="yes")
    assert r.returncode != 0 and "There is no snapshot 'nope'" in r.output

    r = make_target("rollback", inv, TO=base["id"], CHECK="1")
    assert r.returncode == 0 and (webui / "venv" / "lib" / "new.py").exists()

    r = make_target("rollback", inv, TO=base["id"], PATHS=str(home / ".zprofile"), CONFIRM="yes")
    assert r.returncode == 0, r
    assert (home / ".zprofile").read_text().startswith("eval") and (
        webui / "venv" / "lib" / "new.py"
    ).exists()

    r = make_target("rollback", inv, TO=base["id"], CONFIRM="yes")
    assert r.returncode == 0, r
    # What a rollback promises, and only that: every path the snapshot captured, byte for byte, with mode,
    # owner and mtime, and nothing else under its roots. What it captured is read back from the store.
    captured = tmp_path / "captured"
    store.restore(base["id"], str(captured))
    for root in m["roots"]:
        assert state(root["path"]) == state(captured / root["path"].lstrip("/")), root["path"]
    assert {r["path"] for r in m["roots"]} == {str(webui), str(home / ".zprofile"), str(home / "sd-models")}
    # Ansible's temp directories never land in the account's home (remote_tmp is the system temp directory),
    # so the home holds what the snapshot captured and no trace of the runs in between.
    assert not (home / ".ansible").exists()

    r = make_target("snapshot-check", inv, DEEP="1")
    assert r.returncode == 0 and "re-hashed" in r.output, r
    r = make_target("snapshot-prune", inv)
    assert r.returncode == 0 and "Forgot 0 snapshot(s)" in r.output, r


def test_rollback_keeps_the_users_outputs_prints_its_plan_and_takes_labels(
    tmp_path, test_inventory, webui_user, make_target, throwaway_user
):
    home, webui = webui_user
    inv = test_inventory(
        sdenv_user_home=str(home),
        sdenv_webui_dir=str(webui),
        sdenv_snapshot_store=str(tmp_path / "store"),
    )
    store = ss.Store(str(tmp_path / "store"))
    assert make_target("snapshot", inv, LABEL="first").returncode == 0
    (first,) = store.list()
    # After the snapshot the user generates an image, and an upgrade breaks a file of the venv.
    image = webui / "outputs" / "txt2img-images" / "2026-12-07" / "00000-1.png"
    subprocess.run(["runuser", "-u", throwaway_user, "--", "mkdir", "-p", str(image.parent)], check=True)
    subprocess.run(["runuser", "-u", throwaway_user, "--", "cp", "/dev/null", str(image)], check=True)
    image.write_bytes(b"\x89PNG" + b"p" * 2044)
    (webui / "venv" / "lib" / "f1.py").write_text("broken = 1\n")

    def outside_git():  # the facts read as the dummy run `git status`, which may refresh .git/index
        return {p: v for p, v in state(webui).items() if p != ".git" and not p.startswith(".git/")}

    before = outside_git()

    r = make_target("rollback", inv, TO="first", CHECK="1")
    assert r.returncode == 0, r
    assert outside_git() == before and len(store.list()) == 1, "CHECK=1 changed something"
    assert f"Rollback plan, to snapshot {first['id']} (label first, {first['time']}):" in r.output
    assert f"{webui}/venv/: replace 1 file (6 B)." in r.output, r.output
    kept = (
        "Kept as it is (user data, not rolled back; name it in PATHS= to roll it back): "
        f"{webui}/outputs: 1 file new (2.0 KiB) since the snapshot."
    )
    assert kept in r.output and "CHECK=1: that is the plan only; nothing was changed." in r.output

    r = make_target("rollback", inv, TO="first", CONFIRM="yes")
    assert r.returncode == 0, r
    assert image.read_bytes() == b"\x89PNG" + b"p" * 2044, "the rollback lost the user's image"
    assert (webui / "venv" / "lib" / "f1.py").read_text() == "x = 1\n"
    undo = store.list()[-1]
    assert undo["kind"] == "before-rollback"
    out = r.output
    assert out.index("Rollback plan, to snapshot") < out.index("Rolled back to snapshot"), (
        "no plan before the change"
    )
    assert (
        f"Rolled back to snapshot {first['id']} (label first, {first['time']}): replaced 1 file (6 B)." in out
    )
    assert kept in out[out.index("Rolled back to snapshot") :]
    assert f"to go back to it: make rollback TO={undo['id']}" in out
    assert "'removed':" not in out and "'bytes_written':" not in out, "the result is still a Python dict"

    # PATHS= naming the outputs rolls them back after all.
    r = make_target("rollback", inv, TO="first", PATHS=str(webui / "outputs"), CONFIRM="yes")
    assert r.returncode == 0 and not image.exists(), r

    # A label given twice means the newest, and the run says so; an unknown one names what exists.
    (webui / "venv" / "lib" / "f2.py").write_text("second\n")
    assert make_target("snapshot", inv, LABEL="first").returncode == 0
    second = store.list()[-1]["id"]
    r = make_target("rollback", inv, TO="first", CHECK="1")
    assert (
        r.returncode == 0
        and f"The label 'first' names 2 snapshots ({first['id']}, {second}): the newest" in r.output
    )
    r = make_target("rollback", inv, TO="frist", CONFIRM="yes")
    assert r.returncode != 0
    assert (
        "There is no snapshot 'frist'" in r.output
        and "the labels there are before-rollback, first;" in r.output
    )

    r = make_target("snapshots", inv)
    assert r.returncode == 0, r
    header = next(ln for ln in r.output.splitlines() if re.search(r"\bid +time +kind +label +files", ln))
    indent = len(header) - len(header.lstrip())
    rows = [ln[indent:] for ln in r.output.splitlines() if re.match(r" *\d{8}T\d{6}\.\d{6}Z-", ln)]
    assert len(rows) == len(store.list()) == 4, r.output
    cells = [re.split(r" {2,}", row) for row in [header[indent:], *rows]]
    assert {len(c) for c in cells} == {8}, r.output
    assert {row.index(c[1]) for row, c in zip([header[indent:], *rows], cells)} == {
        header[indent:].index("time")
    }

    listed = subprocess.run(
        make_argv("snapshots", inv, JSON="1"), capture_output=True, text=True, check=False, timeout=600
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"localhost": store.list()}
