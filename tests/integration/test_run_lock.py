"""One changing run per host at a time, for real: two `make provision` at once on one throwaway user take
turns (the second waits or refuses naming the first), kill -9 of a run frees the lock for the next one (its
helper sees the run go and clears it; only a helper killed itself leaves a record to take over), and
a WebUI sub-repository left with a broken .git is repaired by the next provision (on main it sent git to the
WebUI's own repository, which ended checked out at the sub-repository's commit)."""

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import sdenv_run_lock
from sdenv_testlib import make_argv, processes_marked
from test_webui_provision import TAGS, git_head, upstream, wait_for, webui_inventory  # noqa: F401
from webui_fixtures import SUBREPOS

ENV = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}


def holder(inventory):
    """The run lock's record ({} while there is none, or while it is being written)."""
    try:
        return json.loads((inventory.state_dir / "run.lock").read_text() or "{}")
    except (OSError, ValueError):
        return {}


def start(inventory, log, marker="", **variables):
    """`make provision` in the background, its output into log."""
    env = {**ENV, "SDT_RUN_LOCK_MARK": marker} if marker else ENV
    with open(log, "w") as out:
        return subprocess.Popen(make_argv("provision", inventory, ARGS=TAGS, **variables), stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip


def payload_dirs():
    return set(Path("/tmp").glob("ansible_*_payload_*"))


def assert_pinned(inventory, fixture):
    """The WebUI tree and each sub-repository at its pin, each with its own origin, no clone left over."""
    webui = Path(pwd.getpwnam(inventory.user).pw_dir) / "stable-diffusion-webui"
    lock = inventory.variables["sdenv_lock"]
    assert git_head(webui) == fixture.webui_shas[0], "the WebUI tree is not at its pinned commit"
    origin = ["git", "-c", "safe.directory=*", "config", "--get", "remote.origin.url"]
    assert (
        subprocess.run(origin, cwd=webui, capture_output=True, text=True).stdout.strip()
        == lock["webui"]["repo"]
    )
    for directory, _ in SUBREPOS:
        sub = webui / "repositories" / directory
        top = subprocess.run(["git", "-c", "safe.directory=*", "rev-parse", "--show-toplevel"], cwd=sub,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert top == str(sub), f"{directory} is not a repository of its own"
        assert git_head(sub) == fixture.subrepo_shas[directory][0], directory
    leftovers = [
        p for p in (webui.parent, webui / "repositories") for p in p.iterdir() if ".sdenv-clone-" in p.name
    ]
    assert leftovers == [], leftovers
    return webui


def test_two_provisions_at_once_take_turns_and_the_tree_ends_pinned(test_inventory, upstream, tmp_path):  # noqa: F811
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server, sdenv_webui_venv_bootstrap=False)
    first = start(inventory, tmp_path / "first.log")
    second = None
    frozen = None
    try:
        wait_for(lambda: holder(inventory).get("helper_pid"), "the first provision to take the run lock")
        record = holder(inventory)
        assert record["target"] == "provision"
        frozen = record["controller_pid"]
        os.kill(frozen, signal.SIGSTOP)  # the first run now holds the lock for as long as the test wants
        # The helper holding it is a fresh interpreter (none of the module's memory or the run's environment).
        assert b"sdenv-run-lock-helper" in Path(f"/proc/{record['helper_pid']}/cmdline").read_bytes()

        refused = subprocess.run(
            make_argv("provision", inventory, ARGS=f"{TAGS} -e sdenv_run_lock_timeout=0"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, check=False,
        )  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        assert f"Another make provision, pid {frozen} on " in refused.stdout, refused.stdout[-3000:]
        assert "is still changing this host after 0 s" in refused.stdout

        second = start(inventory, tmp_path / "second.log")
        waiting = f"another make provision, pid {frozen} on "
        wait_for(lambda: "is changing this host: waiting" in (tmp_path / "second.log").read_text(),
                 "the second provision to say it waits")  # fmt: skip
        assert waiting in (tmp_path / "second.log").read_text()
        assert second.poll() is None, "the second provision did not wait"
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        assert first.wait(timeout=1800) == 0, (tmp_path / "first.log").read_text()[-4000:]
        assert second.wait(timeout=1800) == 0, (tmp_path / "second.log").read_text()[-4000:]
    finally:
        if frozen:
            os.kill(frozen, signal.SIGCONT)
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert "taking the lock over" not in (tmp_path / "second.log").read_text(), (
        "the first run did not release"
    )
    assert not (inventory.state_dir / "run.lock").exists(), "the lock outlived the runs"
    assert_pinned(inventory, fixture)


def test_kill_9_frees_the_lock_and_a_broken_sub_repository_is_repaired(test_inventory, upstream, tmp_path):  # noqa: F811
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server, sdenv_webui_venv_bootstrap=False)
    setup = start(inventory, tmp_path / "setup.log")
    assert setup.wait(timeout=1800) == 0, (tmp_path / "setup.log").read_text()[-4000:]
    webui = assert_pinned(inventory, fixture)

    # What two runs at once left on main: a sub-repository whose .git is an empty directory.
    user = pwd.getpwnam(inventory.user)
    broken = webui / "repositories" / SUBREPOS[1][0]
    shutil.rmtree(broken / ".git")
    (broken / ".git").mkdir()
    os.chown(broken / ".git", user.pw_uid, user.pw_gid)

    # A run killed with kill -9 while it holds the lock (make, ansible-playbook and whatever it started).
    marker = secrets.token_hex(8)
    payloads = payload_dirs()
    killed = start(inventory, tmp_path / "killed.log", marker=marker)
    try:
        wait_for(lambda: holder(inventory).get("helper_pid"), "the provision to take the run lock")
        record = holder(inventory)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        helper = holder(inventory)
        for pid in processes_marked(marker):
            if pid != helper.get("helper_pid"):  # the lock's helper must see its run gone by itself
                os.kill(pid, signal.SIGKILL)
        for leftover in payload_dirs() - payloads:
            if [p.name for p in leftover.iterdir()] == [leftover.name.rsplit("_", 1)[0] + ".zip"]:
                shutil.rmtree(leftover, ignore_errors=True)

    # The helper sees its run gone and ends by itself (a helper that never did would hold this wait forever).
    wait_for(lambda: not sdenv_run_lock.is_alive(helper.get("helper_pid"), helper.get("helper_start")),
             "the killed run's lock helper to end", seconds=600)  # fmt: skip
    final = subprocess.run(make_argv("provision", inventory, ARGS=TAGS), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=ENV, check=False)  # fmt: skip
    assert final.returncode == 0, final.stdout[-4000:]
    # The killed run's helper saw its ansible-playbook go and cleared the lock (else the final run would have
    # waited sdenv_run_lock_timeout, then refused): nothing to take over.
    said = [line for line in final.stdout.splitlines() if "lock" in line]
    assert "taking the lock over" not in final.stdout and record["target"] == "provision", (said, record)
    assert_pinned(inventory, fixture)
    assert not (inventory.state_dir / "run.lock").exists(), "the lock outlived the run"
