"""make upgrade's controller-side lock (upgrade_lock): a second upgrade of one inventory is refused naming the
first (pid, target), the lock goes with its holder however it ends (kill -9 included), and sdenv_upgrade.py
refuses before it plans or writes anything."""

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import upgrade_lock

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "roles" / "webui" / "files" / "sdenv_upgrade.py"


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with upgrade_lock.held(tmp_path, "make upgrade WEBUI=v1.10.2"):
        assert (tmp_path / upgrade_lock.LOCK_NAME).is_file()
        with (
            pytest.raises(upgrade_lock.UpgradeLocked) as refused,
            upgrade_lock.held(tmp_path, "make rollback"),
        ):
            pytest.fail("two holders at once")
    message = str(refused.value)
    assert message.startswith(f"Another make upgrade WEBUI=v1.10.2 (pid {os.getpid()}, started at ")
    assert message.endswith("let it finish, then run this again.") and message.count(". ") == 0
    assert str(tmp_path / upgrade_lock.LOCK_NAME) in message
    # Released and removed at the end: the next run takes it.
    assert not (tmp_path / upgrade_lock.LOCK_NAME).exists()
    with upgrade_lock.held(tmp_path, "make upgrade WEBUI=v1.10.1"):
        pass


def test_the_lock_is_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError), upgrade_lock.held(tmp_path, "make upgrade WEBUI=x"):
        raise RuntimeError("red")
    with upgrade_lock.held(tmp_path, "make upgrade WEBUI=y"):
        pass


def hold_in_child(directory):
    """A process holding the lock, started and ready (it says so on its stdout)."""
    code = (
        "import sys, upgrade_lock\n"
        "with upgrade_lock.held(sys.argv[1], 'make upgrade WEBUI=v9'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    path = os.pathsep.join(
        [str(ROOT / "roles" / "webui" / "module_utils"), str(ROOT / "plugins" / "module_utils")]
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert child.stdout.readline() == "held\n"
    return child


def test_a_holder_killed_with_kill_9_leaves_a_lock_the_next_run_takes(tmp_path):
    child = hold_in_child(tmp_path)
    try:
        refused = pytest.raises(upgrade_lock.UpgradeLocked, match=f"WEBUI=v9 \\(pid {child.pid}, ")
        with refused, upgrade_lock.held(tmp_path, "make upgrade WEBUI=v1"):
            pytest.fail("taken while another process held it")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (tmp_path / upgrade_lock.LOCK_NAME).exists()  # its record is left, its flock went with it
    with upgrade_lock.held(tmp_path, "make upgrade WEBUI=v1"):
        assert (
            f'"pid": {os.getpid()}' in (tmp_path / upgrade_lock.LOCK_NAME).read_text()
        )  # now names this run
    assert not (tmp_path / upgrade_lock.LOCK_NAME).exists()


def test_a_lock_file_removed_by_its_ending_holder_is_not_taken(tmp_path, monkeypatch):
    """The file a waiter opened was removed by its holder before the waiter's flock: that inode locks nothing,
    so held() opens the file again (the current one) instead."""
    calls = []
    real = upgrade_lock.is_current

    def first_stale(fd, path):
        calls.append(path)
        return len(calls) > 1 and real(fd, path)

    monkeypatch.setattr(upgrade_lock, "is_current", first_stale)
    with upgrade_lock.held(tmp_path, "make upgrade WEBUI=v1"):
        assert len(calls) == 2


def test_make_upgrade_is_refused_while_another_holds_the_lock(tmp_path, capsys, monkeypatch):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    lock = tmp_path / "group_vars" / "all" / "lock.yml"
    lock.parent.mkdir(parents=True)
    lock.write_text("---\nsdenv_lock: {}\n")
    child = hold_in_child(tmp_path)
    try:
        monkeypatch.setattr(sys, "argv", [str(CLI)])
        cli = runpy.run_path(str(CLI))
        status = cli["main"](["upgrade", "--inventory", str(inventory), "--webui", "v1.10.2", "--check"])
        (tmp_path / ".sdenv-upgrade").mkdir()
        (tmp_path / ".sdenv-upgrade" / "journal.json").write_text('{"step": "locked", "hosts": {}}')
        status_rollback = cli["main"](["recover", "--inventory", str(inventory)])
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    err = capsys.readouterr().err
    assert status == 1 and status_rollback == 1, err
    refusals = [line for line in err.splitlines() if "Another make upgrade WEBUI=v9" in line]
    assert len(refusals) == 2 and all(f"pid {child.pid}" in line for line in refusals), err
    assert lock.read_text() == "---\nsdenv_lock: {}\n"
    assert [p.name for p in (tmp_path / ".sdenv-upgrade").iterdir()] == ["journal.json"]
