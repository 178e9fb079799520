"""One changing run per host at a time, for real: two `make provision` at once on one throwaway user take
turns (the second waits or refuses naming the first), kill -9 of a run frees the lock for the next one (its
helper sees the run go and clears it; only a helper killed itself leaves a record to take over), and
a WebUI sub-repository left with a broken .git is repaired by the next provision (on main it sent git to the
WebUI's own repository, which ended checked out at the sub-repository's commit); and the lock taken inside the
preflight's module run is held through the target's later plays and let go at its end."""

import contextlib
import fcntl
import json
import os
import pty
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import termios
import threading
from pathlib import Path

import sdenv_run_lock
import snapshot_store
from sdenv_testlib import make_argv, processes_marked
from test_snapshot import webui_user  # noqa: F401 - a WebUI-shaped tree, no provision
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


def on_a_terminal(argv, master_and_slave, env):
    """argv in a session of its own whose controlling terminal is the pty's slave (so Ansible's pause prompts
    there, as it does for a user at a terminal)."""
    _, slave = master_and_slave

    def controlling_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            preexec_fn=controlling_terminal)  # fmt: skip


def test_the_lock_the_preflight_takes_is_held_through_the_later_plays_and_let_go_at_the_end(
    tmp_path,
    test_inventory,
    webui_user,  # noqa: F811
    make_target,
):
    """The lock has no task of its own: the preflight's module run takes it. A rollback waiting at its
    confirmation prompt (a play after the preflight's) still holds it, so a snapshot is refused naming it; once
    confirmed, the rollback ends and the lock is gone with its helper, on this machine without a release task."""
    home, webui = webui_user
    inventory = test_inventory(
        sdenv_user_home=str(home), sdenv_webui_dir=str(webui), sdenv_snapshot_store=str(tmp_path / "store")
    )
    base = make_target("snapshot", inventory, LABEL="base")
    assert base.returncode == 0, base
    assert "Wait for any other run changing this host" not in base.output, "the lock still has a task"
    assert not (inventory.state_dir / "run.lock").exists(), "the lock outlived the run"
    store = snapshot_store.Store(str(tmp_path / "store"))
    bad = make_target("snapshot", inventory, ARGS="-e sdenv_run_lock_timeout=soon")
    assert bad.returncode != 0, bad
    assert (
        "-e on the command line sets sdenv_run_lock_timeout to 'soon': expected a whole number of seconds"
        in (bad.output)
    ), bad
    assert len(store.list()) == 1 and not (inventory.state_dir / "run.lock").exists(), (
        "the refusal left a lock"
    )

    terminal = pty.openpty()
    said = bytearray()

    def read_terminal():
        while True:
            ready, _, _ = select.select([terminal[0]], [], [], 1)
            if ready:
                try:
                    chunk = os.read(terminal[0], 65536)
                except OSError:  # the slave side closed: the run ended
                    return
                if not chunk:
                    return
                said.extend(chunk)
            elif rollback.poll() is not None:
                return

    rollback = on_a_terminal(make_argv("rollback", inventory, TO="base"), terminal, ENV)
    os.close(terminal[1])  # the run's own: the reader sees the end when the run's side closes
    record = {}
    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        wait_for(lambda: b"Type yes to go ahead" in said or rollback.poll() is not None,
                 "the rollback to ask for confirmation")  # fmt: skip
        assert rollback.poll() is None, said.decode(errors="replace")[-3000:]
        record = holder(inventory)
        assert record.get("target") == "rollback", (record, said.decode(errors="replace")[-3000:])
        assert sdenv_run_lock.is_alive(record["helper_pid"], record["helper_start"])

        refused = make_target("snapshot", inventory, ARGS="-e sdenv_run_lock_timeout=0")
        assert refused.returncode != 0, refused
        assert f"Another make rollback, pid {record['controller_pid']} on " in refused.output, refused
        assert "is still changing this host after 0 s" in refused.output, refused
        assert len(store.list()) == 1, "the refused snapshot took one"

        os.write(terminal[0], b"yes\n")
        assert rollback.wait(timeout=600) == 0, said.decode(errors="replace")[-4000:]
    finally:
        if rollback.poll() is None:
            os.killpg(rollback.pid, signal.SIGKILL)
            rollback.wait()
        reader.join(timeout=10)
        with contextlib.suppress(OSError):
            os.close(terminal[0])
    assert "Wait for any other run changing this host" not in said.decode(errors="replace")
    assert not (inventory.state_dir / "run.lock").exists(), "the lock outlived the run"
    assert not sdenv_run_lock.is_alive(record.get("helper_pid"), record.get("helper_start")), (
        "its helper lived on"
    )
