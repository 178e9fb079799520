"""The dummy account's whole lifecycle through the real make targets, on this machine (root)."""

import json
import os
import pwd
import struct
import subprocess
import time

import pytest
from sdenv_testlib import remove_user, user_exists

# The account's lifecycle on its own: the later roles (packages, WebUI, models) have their own tests.
ONLY_THE_ACCOUNT = "--tags dummy_user"


def account(name):
    entry = pwd.getpwnam(name)
    groups = subprocess.run(["id", "-Gn", name], capture_output=True, text=True, check=True).stdout.split()
    return {"uid": entry.pw_uid, "home": entry.pw_dir, "shell": entry.pw_shell, "groups": groups}


def record(inventory):
    with open(inventory.state_dir / "state.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def provisioned(test_inventory, make_target):
    """A dummy account made by `make provision`, with a marker file in its home."""
    inventory = test_inventory()
    result = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert result.returncode == 0, result
    marker = os.path.join(account(inventory.user)["home"], "old-home-marker")
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write("from before the reset\n")
    return inventory, marker


def test_provision_creates_an_admin_account_and_is_idempotent(provisioned, make_target):
    inventory, _ = provisioned
    user = account(inventory.user)
    assert "sudo" in user["groups"]
    assert user["shell"] == "/bin/zsh"
    assert os.stat(user["home"]).st_uid == user["uid"]

    entry = record(inventory)["users"][inventory.user]
    assert entry["uid"] == user["uid"] and entry["created_by_toolkit"] is True
    password_file = inventory.state_dir / f"{inventory.user}.password"
    info = os.stat(password_file)
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)
    shadow = subprocess.run(["getent", "shadow", inventory.user], capture_output=True, text=True).stdout
    assert shadow.split(":")[1].startswith("$"), "the generated password was not set"

    again = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert again.returncode == 0, again
    assert again.recap["changed"] == 0, again
    assert password_file.read_text() not in again.output

    dry = make_target("provision", inventory, CHECK=1, ARGS=ONLY_THE_ACCOUNT)
    assert dry.returncode == 0 and dry.recap["changed"] == 0, dry


def test_reset_dummy_recreates_a_clean_account(provisioned, make_target):
    inventory, marker = provisioned
    before = record(inventory)["users"][inventory.user]
    time.sleep(1.1)  # created_at has one-second resolution; the new entry must be told apart
    result = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert result.returncode == 0, result
    assert user_exists(inventory.user)
    assert not os.path.exists(marker), "the old home survived the reset"
    user = account(inventory.user)
    assert os.stat(user["home"]).st_uid == user["uid"] and "sudo" in user["groups"]
    after = record(inventory)["users"][inventory.user]
    assert after["created_by_toolkit"] is True and after["created_at"] != before["created_at"]

    again = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert again.returncode == 0 and again.recap["changed"] == 0, again


def test_reset_removes_recorded_paths_outside_the_home(provisioned, make_target, tmp_path):
    inventory, _ = provisioned
    made_for_it = tmp_path / "made-for-dummy"
    (made_for_it / "bin").mkdir(parents=True)
    state = record(inventory)
    state["users"][inventory.user]["created_paths"] = [str(made_for_it)]
    (inventory.state_dir / "state.json").write_text(json.dumps(state))
    bystander = tmp_path / "not-recorded"
    bystander.mkdir()

    result = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert result.returncode == 0, result
    assert not made_for_it.exists() and bystander.exists()
    assert record(inventory)["users"][inventory.user]["created_paths"] == []


def utmp_console_login(path, user):
    """A glibc x86_64 utmp record saying `user` is logged in on tty1 (USER_PROCESS)."""
    entry = struct.pack(
        "<h2xi32s4s32s256shhi2i4i20x",
        7, os.getpid(), b"tty1", b"1", user.encode(), b"", 0, 0, 0, int(time.time()), 0, 0, 0, 0, 0,
    )  # fmt: skip
    assert len(entry) == 384
    path.write_bytes(entry)
    return path


def assert_refused(result, words, inventory, marker):
    assert result.returncode != 0, result
    assert words in result.output, result
    assert os.path.exists(marker), "a refused reset changed the home"
    assert inventory.user in record(inventory)["users"]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-confirmation", "Not confirmed: nothing was changed"),
        ("invoking-user", "it is the account running this command"),
        ("sudo-user", "it is the account running this command"),
        ("console", "it is logged in at the console"),
    ],
)
def test_reset_refusals_change_nothing(provisioned, make_target, tmp_path, case, words):
    inventory, marker = provisioned
    env, variables = {}, {"CONFIRM": "yes"}
    if case == "no-confirmation":
        variables = {}
    elif case == "invoking-user":
        env = {"USER": inventory.user}
    elif case == "sudo-user":
        env = {"SUDO_USER": inventory.user}
    elif case == "console":
        probe = utmp_console_login(tmp_path / "utmp", inventory.user)
        variables["ARGS"] = f"-e sdenv_console_probe_file={probe}"
    uid = account(inventory.user)["uid"]
    result = make_target("reset-dummy", inventory, env=env, **variables)
    assert_refused(result, words, inventory, marker)
    assert account(inventory.user)["uid"] == uid


# Root and system accounts are refused as the dummy by every target's preflight, before reset's own guard
# (reset_refusal, unit-tested) is reached.
def test_reset_refuses_root(test_inventory, make_target):
    inventory = test_inventory(sdenv_user_name="root")
    result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
    assert result.returncode != 0, result
    assert (
        "sets sdenv_user_name to 'root': expected the name of the dummy account, never root" in result.output
    )
    assert os.path.isdir("/root")


def test_reset_refuses_a_system_account(test_inventory, make_target, throwaway_user):
    subprocess.run(["useradd", "--system", "--no-create-home", throwaway_user], check=True)
    inventory = test_inventory()
    result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
    assert result.returncode != 0 and f"{throwaway_user} is a system account here (uid" in result.output, (
        result
    )
    assert user_exists(throwaway_user)


def test_reset_refuses_an_account_the_toolkit_did_not_create_unless_forced(test_inventory, make_target):
    inventory = test_inventory()
    subprocess.run(["useradd", "--create-home", inventory.user], check=True)
    try:
        marker = os.path.join(account(inventory.user)["home"], "handmade")
        open(marker, "w").close()
        adopted = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
        assert adopted.returncode == 0, adopted
        assert record(inventory)["users"][inventory.user]["created_by_toolkit"] is False

        refused = make_target("reset-dummy", inventory, CONFIRM="yes")
        assert_refused(refused, "does not say this toolkit created it", inventory, marker)

        forced = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
        assert forced.returncode == 0, forced
        assert not os.path.exists(marker)
        assert record(inventory)["users"][inventory.user]["created_by_toolkit"] is True
    finally:
        remove_user(inventory.user)
