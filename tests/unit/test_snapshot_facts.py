"""Manifest facts: parsing, the facts diff, and WebUI process detection from recorded outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import snapshot_facts as sf


def test_pip_freeze_and_brew_parsing():
    pip = "Torch==2.1.2\nopen_clip_torch @ https://x/y.zip\n# comment\nsetuptools==69.5.1\n"
    assert sf.parse_pip_freeze(pip) == {
        "torch": "2.1.2",
        "open-clip-torch": "https://x/y.zip",
        "setuptools": "69.5.1",
    }
    assert sf.parse_brew_versions("cmake 3.31.1\npython@3.10 3.10.16 3.10.15\n") == {
        "cmake": "3.31.1",
        "python@3.10": "3.10.16 3.10.15",
    }


def test_diff_facts_names_each_change():
    old = {
        "webui": {"commit": "a" * 40, "dirty": False},
        "repositories": {"k-diffusion": {"commit": "b" * 40, "dirty": False}},
        "pip_freeze": {"torch": "2.1.2", "gone": "1"},
        "models": {"/w/models/m.safetensors": "1" * 64},
        "python": "Python 3.10.16",
    }
    new = {
        "webui": {"commit": "a" * 40, "dirty": True},
        "repositories": {},
        "pip_freeze": {"torch": "2.3.1", "new": "2"},
        "models": {"/w/models/m.safetensors": "2" * 64},
        "python": "Python 3.10.16",
    }
    lines = sf.diff_facts(old, new)
    assert lines == [
        "webui: aaaaaaaaaaaa -> aaaaaaaaaaaa (dirty)",
        "repositories/k-diffusion: bbbbbbbbbbbb -> absent",
        "pip: - gone 1",
        "pip: + new 2",
        "pip: torch 2.1.2 -> 2.3.1",
        "model: /w/models/m.safetensors 111111111111 -> 222222222222",
    ]
    assert sf.diff_facts(old, old) == []


def test_gather_records_absent_facts_with_a_reason(tmp_path):
    facts = sf.gather(str(tmp_path), brew=None)
    assert facts["webui"] is None and "not a git checkout" in facts["absent"]["webui"]
    assert facts["pip_freeze"] is None and "no venv" in facts["absent"]["pip_freeze"]
    assert facts["brew"] is None


def test_gather_reads_git_state(tmp_path):
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@e",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@e",
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "c"], check=True, env=env)
    assert sf.gather(str(tmp_path))["webui"]["dirty"] is False
    (tmp_path / "f").write_text("2")
    w = sf.gather(str(tmp_path))["webui"]
    assert w["dirty"] is True and len(w["commit"]) == 40


def test_running_webui_detected_from_this_tree_only(tmp_path):
    tree = tmp_path / "webui"
    tree.mkdir()
    (tree / "launch.py").write_text("import time\ntime.sleep(60)\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "launch.py").write_text("import time\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "launch.py"], cwd=tree)
    q = subprocess.Popen([sys.executable, str(other / "launch.py")])
    try:
        found = sf.running_webui(str(tree))
        assert [f["pid"] for f in found] == [p.pid]
    finally:
        p.kill()
        q.kill()
        p.wait()
        q.wait()
    assert sf.running_webui(str(tree)) == []


def test_darwin_ps_and_lsof_parsing():
    ps = "  101 /bin/zsh -l\n 4242 python3 launch.py --skip-torch-cuda-test\n"
    assert sf.parse_ps(ps) == [(101, "/bin/zsh -l"), (4242, "python3 launch.py --skip-torch-cuda-test")]
    assert sf.parse_lsof_cwd("p4242\nfcwd\nn/Users/dummy/stable-diffusion-webui\n") == (
        "/Users/dummy/stable-diffusion-webui"
    )
    assert sf._launcher_hits(
        ["python3", "launch.py"], "/Users/dummy/stable-diffusion-webui", "/Users/dummy/stable-diffusion-webui"
    )
    assert not sf._launcher_hits(
        ["python3", "launch.py"], "/Users/dummy/other", "/Users/dummy/stable-diffusion-webui"
    )


def test_facts_commands_run_as_the_owner_with_the_environment_sudo_gives():
    owner = {"name": "dummy", "uid": 501, "gid": 20, "groups": [20, 80], "home": "/nonexistent/dummy"}
    environ = {
        "HOME": "/root",
        "PATH": "/root/bin:/usr/bin",
        "LANG": "ja_JP.UTF-8",
        "SSH_AUTH_SOCK": "/tmp/s",
    }
    args = sf.as_user_args(owner, environ=environ, euid=0)
    assert (args["user"], args["group"], args["extra_groups"]) == (501, 20, [20, 80])
    assert args["env"] == {
        "HOME": "/nonexistent/dummy",
        "USER": "dummy",
        "LOGNAME": "dummy",
        "PATH": sf.SECURE_PATH,
        "LANG": "ja_JP.UTF-8",
    }, "root's environment (its HOME, PATH, agent socket) must not reach the owner's commands"
    assert args["cwd"] == "/", "a home that is not there is no working directory"
    # Already the owner: the same environment, no switch. No owner: the command runs as it always did.
    same = sf.as_user_args(owner, environ=environ, euid=501)
    assert "user" not in same and same["env"]["HOME"] == "/nonexistent/dummy"
    assert sf.as_user_args(None) == {}


def test_a_caller_that_cannot_switch_gets_the_fact_absent_with_a_reason(monkeypatch):
    owner = {"name": "dummy", "uid": os.geteuid() + 1, "gid": 20, "groups": [20], "home": "/"}
    monkeypatch.setattr(sf.os, "geteuid", lambda: 4242)
    rc, _, err = sf._run(["true"], owner=owner)
    assert rc == 126 and "uid 4242 cannot run commands as dummy" in err


def test_account_reads_the_password_database():
    import pwd

    me = pwd.getpwuid(os.getuid())
    found = sf.account(me.pw_name)
    assert (found["uid"], found["gid"], found["home"]) == (me.pw_uid, me.pw_gid, me.pw_dir)
    assert me.pw_gid in found["groups"]
    assert sf.account("sdt-no-such-account-0f3a") is None


def test_gather_as_the_owner_reads_git_as_that_account(tmp_path, monkeypatch):
    """Run as root, git refuses a repository another account owns ("dubious ownership"): the facts are only
    found because git runs as the owner. As any other user, the owner is the caller itself."""
    import pwd
    import shutil
    import tempfile

    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        base = Path(tempfile.mkdtemp(prefix="sdt-facts-", dir="/var/tmp"))  # pytest's tmp_path is 0700 root
        os.chmod(base, 0o755)  # noqa: S103 - nobody reads the tree below it
        try:
            tree = base / "tree"
            tree.mkdir()
            run = dict(capture_output=True, check=True, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                       env={"HOME": str(tree), "PATH": sf.SECURE_PATH, "GIT_CONFIG_GLOBAL": "/dev/null"})  # fmt: skip
            os.chown(tree, nobody.pw_uid, nobody.pw_gid)
            subprocess.run(["git", "init", "-q", str(tree)], **run)
            subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                            "--allow-empty", "-m", "c"], **run)  # fmt: skip
            # No safe.directory of root's own config may let root read it: git's own refusal is the point here.
            monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
            monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
            assert sf.gather(str(tree))["webui"] is None, "root read another account's repository"
            facts = sf.gather(str(tree), owner=sf.account("nobody"))
        finally:
            shutil.rmtree(base)
    else:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                        "--allow-empty", "-m", "c"], check=True)  # fmt: skip
        facts = sf.gather(str(tmp_path), owner=sf.account(pwd.getpwuid(os.geteuid()).pw_name))
    assert facts["webui"]["dirty"] is False and len(facts["webui"]["commit"]) == 40


COMFYUI_LOCK = "c" * 64


def git_checkout(path):
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                    "--allow-empty", "-m", "c"], check=True)  # fmt: skip
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def write_marker(venv, lock_sha256=COMFYUI_LOCK):
    venv.mkdir(parents=True, exist_ok=True)
    marker = venv / sf.VENV_MARKER
    marker.write_text(json.dumps({"digest": "d" * 64, "inputs": {"lock_sha256": lock_sha256}}))
    return marker


def test_the_venv_marker_name_is_the_one_the_venv_builders_write():
    import webui_venv_plan

    assert sf.VENV_MARKER == webui_venv_plan.MARKER


def test_comfyuis_commit_and_venv_lock_are_facts_only_where_it_is_chosen(tmp_path):
    webui, comfyui = tmp_path / "webui", tmp_path / "ComfyUI"
    comfyui.mkdir()
    commit = git_checkout(comfyui)
    write_marker(comfyui / "venv")
    facts = sf.gather(str(webui), comfyui_dir=str(comfyui))
    assert facts["comfyui"] == {"commit": commit, "dirty": False, "changes": 0}
    assert facts["comfyui_venv_lock"] == COMFYUI_LOCK
    assert "comfyui" not in facts["absent"] and "comfyui_venv_lock" not in facts["absent"]
    # A venv elsewhere (sdenv_comfyui_venv_dir) is read there.
    write_marker(tmp_path / "venv-elsewhere", "e" * 64)
    other = sf.gather(str(webui), comfyui_dir=str(comfyui), comfyui_venv_dir=str(tmp_path / "venv-elsewhere"))
    assert other["comfyui_venv_lock"] == "e" * 64
    # Not chosen: no key at all, as in a manifest from before these facts.
    plain = sf.gather(str(webui))
    assert "comfyui" not in plain and "comfyui_venv_lock" not in plain
    # Chosen, but not provisioned yet: null with the reason, as every other fact.
    missing = sf.gather(str(webui), comfyui_dir=str(tmp_path / "nothing"))
    assert missing["comfyui"] is None and "not a git checkout" in missing["absent"]["comfyui"]
    assert missing["comfyui_venv_lock"] is None and "no venv marker" in missing["absent"]["comfyui_venv_lock"]


def test_root_reads_no_other_file_through_the_venv_marker(tmp_path):
    """The marker is in the dummy's tree: a link there (to a file that even looks like a marker), a fifo, a
    marker without a 64-hex lock sha256 all read as no lock, and nothing blocks."""
    elsewhere = write_marker(tmp_path / "elsewhere", "f" * 64)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / sf.VENV_MARKER).symlink_to(elsewhere)
    value, why = sf.venv_lock_sha256(str(venv))
    assert value is None and "no venv marker" in why
    (venv / sf.VENV_MARKER).unlink()
    os.mkfifo(venv / sf.VENV_MARKER)
    value, why = sf.venv_lock_sha256(str(venv))
    assert value is None and "not a regular file" in why
    (venv / sf.VENV_MARKER).unlink()
    for bad in ("../../etc/shadow", "C" * 64, 42):
        write_marker(venv, bad)
        assert sf.venv_lock_sha256(str(venv)) == (
            None,
            f"the venv marker {venv / sf.VENV_MARKER} records no lock sha256",
        )
    (venv / sf.VENV_MARKER).write_text("not json")
    value, why = sf.venv_lock_sha256(str(venv))
    assert value is None and "cannot be read" in why


@pytest.mark.skipif(os.geteuid() != 0, reason="a link of another account is made by root")
def test_root_follows_no_link_of_the_dummys_on_the_way_to_the_venv_marker(tmp_path):
    """The venv (or the app tree) swapped for the dummy's link to a tree holding a marker: no marker."""
    write_marker(tmp_path / "elsewhere", "f" * 64)
    tree = tmp_path / "ComfyUI"
    tree.mkdir()
    os.chown(tree, 4242, 4242)  # the dummy's tree
    (tree / "venv").symlink_to(tmp_path / "elsewhere")
    os.lchown(tree / "venv", 4242, 4242)
    value, why = sf.venv_lock_sha256(str(tree / "venv"))
    assert value is None and "no venv marker" in why and "does not follow links" in why


def test_the_diff_names_comfyuis_commit_and_says_not_recorded_for_an_older_manifest():
    a, b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    old = {"webui": a, "comfyui": a, "comfyui_venv_lock": "1" * 64}
    new = {"webui": a, "comfyui": b, "comfyui_venv_lock": "2" * 64}
    assert sf.diff_facts(old, new) == [
        "comfyui: aaaaaaaaaaaa -> bbbbbbbbbbbb (dirty)",
        "comfyui venv lock: 111111111111 -> 222222222222",
    ]
    # Live facts against a snapshot from before ComfyUI's facts were recorded (the rollback plan's order).
    assert sf.diff_facts(new, {"webui": a}) == [
        "comfyui: bbbbbbbbbbbb (dirty) -> not recorded",
        "comfyui venv lock: 222222222222 -> not recorded",
    ]
    assert sf.diff_facts({"webui": a}, {"webui": a, "comfyui": None, "comfyui_venv_lock": None}) == [
        "comfyui: not recorded -> absent",
        "comfyui venv lock: not recorded -> absent",
    ]
    # Neither manifest records them (ComfyUI not chosen): no line.
    assert sf.diff_facts({"webui": a}, {"webui": b}) == ["webui: aaaaaaaaaaaa -> bbbbbbbbbbbb (dirty)"]


def test_a_snapshot_without_comfyuis_facts_still_rolls_back(tmp_path):
    """The rollback plan of env_snapshot: the live facts (ComfyUI chosen) against an older manifest."""
    import snapshot_store as ss

    live = tmp_path / "webui"
    live.mkdir()
    (live / "launch.py").write_text("print('launch')\n")
    store = ss.Store(str(tmp_path / "store"))
    old = store.snapshot([str(live)], "old", "manual", False, facts={"webui": None, "absent": {}})
    (live / "launch.py").write_text("print('changed')\n")
    facts = {"webui": None, "comfyui": {"commit": "b" * 40, "dirty": False}, "comfyui_venv_lock": "2" * 64}
    plan = store.rollback(old["id"], dry_run=True, facts=facts)
    assert sf.diff_facts(facts, store.load_manifest(plan["target"])["facts"]) == [
        "comfyui: bbbbbbbbbbbb -> not recorded",
        "comfyui venv lock: 222222222222 -> not recorded",
    ]
    done = store.rollback(old["id"], facts=facts)
    assert (live / "launch.py").read_text() == "print('launch')\n"
    assert store.load_manifest(done["before"])["facts"]["comfyui"]["commit"] == "b" * 40
