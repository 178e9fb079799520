"""The run lock (plugins/module_utils/sdenv_run_lock.py): one changing run per host, the holder named, a wait
and a refusal, a dead holder taken over, and the helper that holds it for a run ending with that run."""

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sdenv_run_lock as run_lock
import yaml

ROOT = Path(__file__).resolve().parents[2]


def record(target="provision", pid=4242, token="ctl:4242:1"):  # noqa: S107 - a run token, no secret
    return {
        "target": target,
        "token": token,
        "controller": "ctl",
        "controller_pid": pid,
        "started": "2026-12-07 03:40:00 UTC",
    }


@pytest.fixture
def owner():
    """A process standing in for a run's ansible-playbook: the helper holds the lock while it lives."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


HELPERS = []


@pytest.fixture(autouse=True)
def reap_helpers():
    """The helpers forked here are this test process's children (on a host, init reaps them): reap them once
    their owner (the `owner` fixture, torn down first) is gone."""
    yield
    while HELPERS:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(HELPERS.pop(), 0)


def take(state_dir, owner_proc, prepare=None, **fields):
    """Take the lock with the real helper (fork_holder) tied to owner_proc."""
    held = {
        **record(**fields),
        "owner_pid": owner_proc.pid,
        "owner_start": run_lock.start_token(owner_proc.pid),
    }
    result = run_lock.acquire(str(state_dir), held["token"], held, timeout=0, prepare=prepare)
    if result[0] == "acquired":
        HELPERS.append(holder(state_dir)["helper_pid"])
    return result


def holder(state_dir):
    with open(state_dir / run_lock.LOCK_NAME, encoding="utf-8") as handle:
        return json.load(handle)


def end(proc):
    """End a run as kill -9 would, and reap it (its parent, make, does that for a real run)."""
    proc.kill()
    proc.wait()


def test_a_second_run_is_refused_naming_the_first(tmp_path, owner):
    assert take(tmp_path, owner) == ("acquired", [])
    first = holder(tmp_path)
    assert run_lock.is_alive(first["helper_pid"], first["helper_start"])
    with pytest.raises(run_lock.RunLockError) as refused:
        run_lock.acquire(str(tmp_path), "ctl:999:1", record("snapshot", 999, "ctl:999:1"), timeout=0)
    message = str(refused.value)
    assert message.startswith("Another make provision, pid 4242 on ctl, started at 2026-12-07 03:40:00 UTC,")
    assert "is still changing this host after 0 s" in message and "sdenv_run_lock_timeout" in message
    assert holder(tmp_path)["token"] == first["token"], "a refused run touched the holder's record"
    end(owner)


def test_the_same_run_finds_the_lock_its_own(tmp_path, owner):
    take(tmp_path, owner)
    assert take(tmp_path, owner) == ("ours", [])
    assert run_lock.probe(str(tmp_path), "ctl:4242:1")[0] == "ours"
    state, found = run_lock.probe(str(tmp_path), "ctl:1:1")
    assert state == "busy" and found["controller_pid"] == 4242
    end(owner)


def test_a_second_run_waits_naming_the_first_then_goes_on(tmp_path, owner):
    take(tmp_path, owner)
    said = []

    def on_wait(message):
        said.append(message)
        end(owner)  # the first run ends while the second waits

    state, notes = run_lock.acquire(
        str(tmp_path), "ctl:7:1", {**record("reset-dummy", 7, "ctl:7:1"), "owner_pid": 0}, timeout=3600,
        on_wait=on_wait, spawn=lambda fd, rec: None,
    )  # fmt: skip
    assert said == [
        "another make provision, pid 4242 on ctl, started at 2026-12-07 03:40:00 UTC, is changing this host: "
        "waiting (up to 3600 s)"
    ]
    # The first run's helper cleared the lock as its run ended (removing the file the second had open): the
    # second took the new one, with nothing to take over.
    assert (state, notes) == ("acquired", [])
    assert holder(tmp_path)["target"] == "reset-dummy"


def test_kill_9_of_the_run_releases_the_lock(tmp_path, owner):
    take(tmp_path, owner)
    first = holder(tmp_path)
    end(owner)
    # Blocks until the helper has noticed and let go; a helper that kept it would hang here, not pass.
    state, notes = run_lock.acquire(
        str(tmp_path), "ctl:8:1", record("snapshot", 8, "ctl:8:1"), timeout=3600, spawn=lambda fd, rec: None
    )
    assert (state, notes) == ("acquired", [])
    # The helper lets go of the lock first and ends just after (its last steps put the state directory's
    # times back): give it a moment to end, then it must be gone.
    for _ in range(200):
        if not run_lock.is_alive(first["helper_pid"], first["helper_start"]):
            break
        time.sleep(0.05)
    assert not run_lock.is_alive(first["helper_pid"], first["helper_start"]), "the helper outlived its run"


def test_kill_9_of_the_helper_releases_the_lock(tmp_path, owner):
    take(tmp_path, owner)
    helper = holder(tmp_path)["helper_pid"]
    os.kill(helper, signal.SIGKILL)
    os.waitpid(helper, 0)  # the kill has landed (the helper is this test's child)
    state, notes = run_lock.acquire(
        str(tmp_path), "ctl:9:1", record("rollback", 9, "ctl:9:1"), timeout=0, spawn=lambda fd, rec: None
    )
    # Only a helper killed itself leaves its record: the next run takes the lock over, naming the dead run.
    assert state == "acquired"
    assert notes == [
        "The run lock was last held by make provision, pid 4242 on ctl, started at 2026-12-07 03:40:00 UTC, "
        "which is no longer running and did not release it (it failed or was killed): taking the lock over."
    ]


def test_release_lets_the_next_run_in_at_once_with_no_takeover(tmp_path, owner):
    take(tmp_path, owner)
    assert run_lock.release(str(tmp_path), "ctl:1:1") is False, "another run's token released the lock"
    assert run_lock.release(str(tmp_path), "ctl:4242:1") is True
    assert not (tmp_path / run_lock.LOCK_NAME).exists(), "a released lock left its file"
    assert run_lock.acquire(str(tmp_path), "ctl:5:1", record(), timeout=0, spawn=lambda fd, rec: None) == (
        "acquired",
        [],
    )
    end(owner)


def test_a_state_directory_the_lock_made_goes_with_it_and_one_in_use_stays(tmp_path, owner):
    state = tmp_path / "state"

    def prepare():
        made = not state.exists()
        state.mkdir(exist_ok=True)
        return made

    take(state, owner, prepare=prepare)
    helper = holder(state)["helper_pid"]
    assert holder(state)["created_dir"] is True
    end(owner)
    os.waitpid(helper, 0)
    assert not state.exists(), "a run that only took the lock left the state directory it made"

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "state.json").write_text("{}")
    second = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    take(kept, second)
    helper = holder(kept)["helper_pid"]
    end(second)
    os.waitpid(helper, 0)
    assert sorted(p.name for p in kept.iterdir()) == ["state.json"]


def test_a_reused_pid_is_not_the_holder(owner):
    start = run_lock.start_token(owner.pid)
    assert run_lock.is_alive(owner.pid, start)
    assert not run_lock.is_alive(owner.pid, "some other start"), "a reused pid was taken for the holder"
    end(owner)
    assert not run_lock.is_alive(owner.pid, start), "an exited (unreaped or gone) process counts as alive"


def test_the_lock_file_is_never_followed_through_a_link(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / run_lock.LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        run_lock.acquire(str(tmp_path), "t", record(), timeout=0, spawn=lambda fd, rec: None)


def test_parse_proc_stat_with_spaces_and_parentheses_in_the_name():
    line = "1234 (a) b (c)) S 99 1234 1234 0 -1 4194560 " + " ".join(["0"] * 12) + " 5555 0 0"
    assert run_lock.parse_proc_stat(line) == ("S", 99, "5555")


def test_parse_ps_line_macos():
    # Recorded from macOS `ps -o ppid=,lstart=,command= -p PID` (documented BSD ps format; not run here).
    line = "  412 Mon Dec  7 03:39:05 2026     sshd: admin@notty"
    assert run_lock.parse_ps_line(line) == (412, "Mon Dec 7 03:39:05 2026", "sshd: admin@notty")


def test_the_owner_is_the_local_run_or_the_ssh_connection():
    local_chain = [(900, "/bin/sh -c python3"), (899, "sudo -H -S -n -u root /bin/sh"),
                   (850, "/usr/bin/python3 .venv/bin/ansible-playbook -i inv p.yml"),
                   (800, "/usr/bin/python3 .venv/bin/ansible-playbook -i inv p.yml"), (700, "make provision")]  # fmt: skip
    assert run_lock.choose_owner(local_chain, 800, local=True) == 800
    ssh_chain = [(500, "/bin/sh -c sudo"), (480, "sshd: admin@notty"), (470, "sshd: admin [priv]"),
                 (1, "/usr/sbin/sshd -D")]  # fmt: skip
    assert run_lock.choose_owner(ssh_chain, 800, local=False) == 480
    new_sshd = [(500, "/bin/sh"), (481, "sshd-session: admin@notty")]
    assert run_lock.choose_owner(new_sshd, 800, local=False) == 481
    assert run_lock.choose_owner([(500, "/bin/sh"), (1, "init")], 800, local=True) is None


def test_ancestors_follow_the_parent_chain():
    table = {10: (5, "s10", "python3 -"), 5: (3, "s5", "sh -c x"), 3: (1, "s3", "ansible-playbook")}
    assert run_lock.ancestors(10, info=table.get) == [(5, "sh -c x"), (3, "ansible-playbook")]


CHANGING = [
    "provision",
    "reset-dummy",
    "remove-dummy",
    "snapshot",
    "rollback",
    "snapshot-prune",
    "pin-models",
]


@pytest.mark.parametrize("target", CHANGING)
def test_every_changing_target_holds_the_lock_from_its_preflight_to_its_end(target):
    """The preflight takes it (in its own module run: no play of its own) and the last play lets it go."""
    plays = yaml.safe_load((ROOT / "playbooks" / f"{target}.yml").read_text())
    assert plays[0]["ansible.builtin.import_playbook"] == "preflight.yml"
    assert plays[0]["vars"]["sdenv_run_lock_target"] == target
    assert not any(play.get("ansible.builtin.import_playbook") == "run-lock.yml" for play in plays)
    assert plays[-1]["ansible.builtin.import_playbook"] == "run-unlock.yml"
    preflight = yaml.safe_load((ROOT / "playbooks" / "preflight.yml").read_text())[0]["tasks"][0]
    assert preflight["sdenv_preflight"]["lock"] == "{{ sdenv_run_lock_target | default('') }}"


def test_a_holder_the_controller_found_gone_is_taken_over_at_once(tmp_path, owner):
    """Over SSH a helper watches the run's connection, which Ansible keeps after a killed run and the next run
    from the same controller shares: that run's controller sees the holder's ansible-playbook gone and names
    its token; the helper is stopped and the lock taken, with a sentence, instead of a wait."""
    take(tmp_path, owner)
    first = holder(tmp_path)
    with pytest.raises(run_lock.RunLockError):
        run_lock.acquire(
            str(tmp_path), "ctl:9:1", record("snapshot", 9, "ctl:9:1"), timeout=0, take_over="other"
        )
    state, notes = run_lock.acquire(
        str(tmp_path), "ctl:9:1", record("snapshot", 9, "ctl:9:1"), timeout=0, take_over=first["token"],
        spawn=lambda fd, rec: None,
    )  # fmt: skip
    assert (
        state == "acquired" and "make provision, pid 4242" in notes[0] and "taking the lock over" in notes[0]
    )
    os.waitpid(first["helper_pid"], 0)
    assert holder(tmp_path)["target"] == "snapshot"


def test_the_helper_is_a_fresh_interpreter_with_nothing_of_the_runs_environment(tmp_path, owner, monkeypatch):
    monkeypatch.setenv("SDT_RUN_LOCK_MARK", "the-run")
    take(tmp_path, owner)
    helper = holder(tmp_path)["helper_pid"]
    with open(f"/proc/{helper}/cmdline", "rb") as handle:
        assert b"sdenv-run-lock-helper" in handle.read(), (
            "the helper did not exec (it holds the module's memory)"
        )
    with open(f"/proc/{helper}/environ", "rb") as handle:
        assert b"SDT_RUN_LOCK_MARK" not in handle.read()
    end(owner)


def test_a_run_that_changed_nothing_leaves_the_state_directory_as_it_was(tmp_path, owner):
    """Refused targets (after their lock) change nothing: the lock file comes and goes, and the directory's
    times are put back when its entries are the same; a run that did change an entry leaves the new times."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text("{}")
    os.utime(state, ns=(1_000_000_000, 2_000_000_000))
    take(state, owner)
    assert run_lock.release(str(state), "ctl:4242:1") is True
    assert os.stat(state).st_mtime_ns == 2_000_000_000 and sorted(os.listdir(state)) == ["state.json"]

    again = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    take(state, again)
    (state / "new.json").write_text("{}")  # what the run did
    assert run_lock.release(str(state), "ctl:4242:1") is True
    end(again)
    assert os.stat(state).st_mtime_ns != 2_000_000_000


def test_a_helper_whose_module_is_gone_goes_on():
    """kill -9 of a run while it takes the lock can kill the module before the helper says it is ready: the
    helper must not die of the broken pipe (that left a record the next run had to take over)."""
    ready_read, ready_write = os.pipe()
    os.close(ready_read)
    run_lock.tell_ready(ready_write)  # raises nothing
    with pytest.raises(OSError):
        os.fstat(ready_write)  # and closed its end


def run_of(state_dir, token="ctl:77:1", target="snapshot"):  # noqa: S107 - a run token, no secret
    """What the preflight hands preflight_facts for its lock; this test process's parent stands in for the
    run's ansible-playbook (an ancestor of the module's process, as on the controller's own host)."""
    return {
        "state_dir": str(state_dir),
        "target": target,
        "token": token,
        "controller": "ctl",
        "controller_pid": os.getppid(),
        "local": True,
    }


def test_the_preflight_takes_a_free_lock_and_names_a_busy_one_without_waiting(tmp_path, owner):
    """preflight_facts takes the lock in its own module run when it is free, and when another run has it,
    takes nothing and waits for nothing: it names the holder, for the preflight to wait once its checks pass."""
    taken = run_lock.take_for_run(run_of(tmp_path), 900, wait=False)
    try:
        assert taken["lock"] == "acquired" and taken["local"] is True
        first = holder(tmp_path)
        assert (first["helper_pid"], first["helper_start"]) == (taken["helper_pid"], taken["helper_start"])
        assert first["target"] == "snapshot" and first["owner_pid"] == os.getppid()
        again = run_lock.take_for_run(run_of(tmp_path), 900, wait=False)
        assert again["lock"] == "ours"

        busy = run_lock.take_for_run(run_of(tmp_path, "ctl:78:1", "provision"), 900, wait=False)
        assert busy["lock"] == "busy" and busy["holder"]["token"] == "ctl:77:1"
        assert holder(tmp_path)["helper_pid"] == first["helper_pid"], "the busy look took something"
        with pytest.raises(run_lock.RunLockError, match=r"Another make snapshot, pid \d+ on ctl.* after 0 s"):
            run_lock.take_for_run(run_of(tmp_path, "ctl:78:1", "provision"), 0)
    finally:
        assert run_lock.release(str(tmp_path), "ctl:77:1") is True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(taken["helper_pid"], 0)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()


def test_a_busy_lock_says_it_waits_or_is_taken_over_from_a_run_of_this_controller_that_ended(monkeypatch):
    holder_record = record("provision", 4242, "ctl:4242:123")
    monkeypatch.setattr(run_lock, "process_start", lambda pid: "123")  # the holder's run still runs
    take_over, message = run_lock.before_waiting(holder_record, "ctl", 900)
    assert take_over == ""
    assert message.startswith("another make provision, pid 4242 on ctl, started at ")
    assert message.endswith("is changing this host: waiting (up to 900 s)")
    monkeypatch.setattr(run_lock, "process_start", lambda pid: "999")  # its pid is someone else's now
    assert run_lock.before_waiting(holder_record, "ctl", 900) == ("ctl:4242:123", None)
    assert run_lock.before_waiting(holder_record, "other", 900)[0] == ""  # another controller's run


def test_no_run_to_tie_the_lock_to_is_refused_in_one_sentence(tmp_path):
    alone = {**run_of(tmp_path), "controller_pid": 999999999, "local": False}
    with pytest.raises(run_lock.RunLockError, match="Cannot find the process of this run"):
        run_lock.take_for_run(alone, 0, wait=False, pid=1)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()


def test_the_callback_lets_go_of_a_lock_the_preflight_took_when_the_playbook_ends(owner):
    """On the controller's own host no task releases the lock: the callback ends the helper the preflight's
    result names (and only a local one: over SSH run-unlock.yml does it)."""
    # By path: the module_utils of the same name is what `import sdenv_run_lock` finds.
    spec = importlib.util.spec_from_file_location(
        "sdenv_run_lock_callback", ROOT / "plugins" / "callback" / "sdenv_run_lock.py"
    )
    callback_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(callback_module)
    callback = callback_module.CallbackModule()
    helper = {"helper_pid": owner.pid, "helper_start": run_lock.start_token(owner.pid)}

    class Result:
        def __init__(self, action, found):
            self._task = type("Task", (), {"action": action})()
            self._result = found

    callback.v2_runner_on_ok(Result("sdenv_preflight", {"run_lock": {"lock": "busy", "local": True}}))
    callback.v2_runner_on_ok(
        Result("sdenv_preflight", {"run_lock": {"lock": "acquired", "local": False, "helper_pid": 1}})
    )
    callback.v2_runner_on_ok(Result("ansible.builtin.debug", {"lock": "acquired", "local": True, **helper}))
    callback.v2_runner_on_ok(
        Result("sdenv_preflight", {"run_lock": {"lock": "acquired", "local": True, **helper}})
    )
    assert callback._helpers == [(owner.pid, helper["helper_start"])]
    callback.v2_playbook_on_stats(None)
    assert owner.wait(timeout=30) == -signal.SIGTERM


def test_the_fleet_caches_lock_names_the_cache_and_keeps_its_directory_private(tmp_path, owner):
    """make provision's fleet cache on the controller (roles/offline_bundle/tasks/fleet_cache_fill.yml): a
    second run sharing the cache waits, naming the first and the cache; the directory is made 0700."""
    cache = tmp_path / "fleet"
    subject = f"the fleet cache {cache}"
    held = {**record(), "owner_pid": owner.pid, "owner_start": run_lock.start_token(owner.pid)}
    state, _ = run_lock.acquire(str(cache), held["token"], held, timeout=0,
                                prepare=lambda: run_lock.private_dir(str(cache)), subject=subject)  # fmt: skip
    HELPERS.append(holder(cache)["helper_pid"])
    assert state == "acquired" and (cache.stat().st_mode & 0o777) == 0o700
    with pytest.raises(run_lock.RunLockError) as refused:
        run_lock.acquire(str(cache), "ctl:5:1", record("provision", 5, "ctl:5:1"), timeout=0,
                         prepare=lambda: run_lock.private_dir(str(cache)), subject=subject)  # fmt: skip
    assert str(refused.value).startswith(
        f"Another make provision, pid 4242 on ctl, started at 2026-12-07 03:40:00 UTC, is still changing {subject}"
        f" after 0 s (lock {cache}/run.lock)"
    )
    said = []
    state, _ = run_lock.acquire(
        str(cache), "ctl:6:1", {**record("provision", 6, "ctl:6:1"), "owner_pid": 0}, timeout=3600,
        on_wait=lambda message: (said.append(message), end(owner)), spawn=lambda fd, rec: None,
        prepare=lambda: run_lock.private_dir(str(cache)), subject=subject,
    )  # fmt: skip
    assert state == "acquired" and said == [
        f"another make provision, pid 4242 on ctl, started at 2026-12-07 03:40:00 UTC, is changing {subject}: "
        "waiting (up to 3600 s)"
    ]
    assert run_lock.private_dir(str(cache)) is False  # there already: left as it is


def test_provision_takes_the_fleet_caches_lock_before_it_reads_the_cache():
    tasks = yaml.safe_load((ROOT / "roles" / "offline_bundle" / "tasks" / "fleet_cache_fill.yml").read_text())
    block = next(task for task in tasks if "block" in task)["block"]
    lock = block[0]["sdenv_run_lock"]
    assert lock["state_dir"] == "{{ sdenv_fleet_cache_dir }}" and lock["private_dir"] is True
    assert "bundle_cache_controller" in block[2]  # the check of the cached files comes after the lock


def test_the_waiting_line_names_what_the_lock_guards(monkeypatch):
    """The sdenv_run_lock action prints the wait in the words of the lock's subject (the fleet cache's lock
    says it is the fleet cache that another run is changing, not this host)."""
    from unittest import mock

    spec = importlib.util.spec_from_file_location(
        "sdenv_run_lock_action", ROOT / "plugins" / "action" / "sdenv_run_lock.py"
    )
    action_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(action_module)
    holder_record = record("provision", 4242, "ctl:4242:123")
    monkeypatch.setattr(action_module, "before_waiting", run_lock.before_waiting)
    monkeypatch.setattr(run_lock, "process_start", lambda pid: "123")  # the holder's run still runs
    said = []
    monkeypatch.setattr(action_module.display, "display", said.append)
    task = mock.MagicMock(
        async_val=0, args={"state_dir": "/c", "subject": "the fleet cache /c", "timeout": 5}
    )
    action = action_module.ActionModule(task, mock.MagicMock(transport="local"), mock.MagicMock(check_mode=False),
                                        None, None, None)  # fmt: skip
    calls = iter([{"lock": "busy", "holder": holder_record}, {"lock": "acquired"}])
    monkeypatch.setattr(action, "_execute_module", lambda *a, **k: next(calls))
    monkeypatch.setattr(action_module.ActionBase, "run", lambda self, tmp=None, task_vars=None: {})
    action.run(task_vars={"inventory_hostname": "ctl"})
    assert said and said[0].endswith("is changing the fleet cache /c: waiting (up to 5 s)"), said
