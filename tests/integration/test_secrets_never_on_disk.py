"""The dummy's password is never written to a file nor shown, even at -vvv (issue 12, section 3).

With SDENV_DUMMY_PASSWORD set, `make provision` (the account), `make verify` and `make reset-dummy` run at
-vvv; the password is in none of their output, and in no file under the temp directories, /var/log,
~/.ansible, ~/.ansible_async, the state directory, the verify report and the account's home; yet it is the
account's password (the shadow hash matches it). Without a password the account gets a random one that is stored
nowhere. A password file left by an earlier version is named in a warning and neither read nor changed.
Where Ansible cannot pipe a module (keep_remote_files, become method su), the password is not passed at all.
The token's side (a download running, then interrupted) is in test_interrupted_download.py.
"""

import os
import pwd
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from sdenv_testlib import files_holding, user_exists

# check_password refuses white space, quotes, backslashes and colons.
PASSWORD = "Sdt-" + os.urandom(12).hex()
ONLY_THE_ACCOUNT = "--tags dummy_user -vvv"


def shadow_hash(user):
    return subprocess.run(
        ["getent", "shadow", user], capture_output=True, text=True, check=True
    ).stdout.split(":")[1]


def is_the_password(user, password):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Python 3.11: deprecated, still here; the hash is what chpasswd wrote

        hashed = shadow_hash(user)
        return crypt.crypt(password, hashed) == hashed


def test_password_stays_out_of_output_and_files(test_inventory, make_target, tmp_path):
    started = time.time() - 1  # a file that holds the password can only have been written after this
    # No models: verify's preflight refuses an enabled model the lock has not pinned (the repository's LoRA).
    inventory = test_inventory(sdenv_models_enabled=[])
    legacy = inventory.state_dir / f"{inventory.user}.password"
    legacy.parent.mkdir(mode=0o755)
    legacy.write_text("written-by-an-earlier-version\n")
    legacy.chmod(0o600)
    env = {"SDENV_DUMMY_PASSWORD": PASSWORD}
    reports = tmp_path / "reports"

    provision = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT, env=env)
    assert provision.returncode == 0, provision
    assert is_the_password(inventory.user, PASSWORD)
    assert f"{legacy} holds a password in plain text, written by an earlier version" in provision.output
    assert legacy.read_text() == "written-by-an-earlier-version\n"

    # Nothing but the account is provisioned, so verify reports failures: only what it prints matters here.
    verify = make_target("verify", inventory, ARGS="-vvv", VERIFY_REPORTS=str(reports), env=env)
    assert "Report: " in verify.output, verify

    reset = make_target("reset-dummy", inventory, CONFIRM="yes", ARGS="-vvv", env=env)
    assert reset.returncode == 0, reset
    assert is_the_password(inventory.user, PASSWORD)

    for name, result in (("provision", provision), ("verify", verify), ("reset-dummy", reset)):
        assert PASSWORD not in result.output, f"make {name} -vvv printed the password"
    roots = {
        tempfile.gettempdir(),
        "/var/tmp",
        "/var/log",
        str(Path.home() / ".ansible"),
        str(Path.home() / ".ansible_async"),
        str(inventory.state_dir),
        str(reports),
        pwd.getpwnam(inventory.user).pw_dir,
    }
    assert files_holding(PASSWORD, sorted(roots), since=started) == []


def test_without_a_password_the_account_gets_one_nobody_knows(test_inventory, make_target):
    inventory = test_inventory()
    result = make_target("provision", inventory, ARGS="--tags dummy_user", env={"SDENV_DUMMY_PASSWORD": ""})
    assert result.returncode == 0, result
    assert shadow_hash(inventory.user).startswith("$"), "no password was set"
    assert "got a random password that was never stored or shown" in result.output
    assert sorted(p.name for p in inventory.state_dir.iterdir()) == ["state.json"]


@pytest.mark.parametrize(
    ("env", "host_vars", "reason"),
    [
        (
            {"ANSIBLE_KEEP_REMOTE_FILES": "1"},
            {},
            "ANSIBLE_KEEP_REMOTE_FILES keeps every module and its arguments on the host: unset it",
        ),
        (
            {},
            {"ansible_become_method": "su"},
            "the become method 'su' cannot pass a module on standard input",
        ),
    ],
    ids=["keep_remote_files", "become su"],
)
def test_where_ansible_cannot_pipe_the_password_is_not_passed(
    test_inventory, make_target, tmp_path, env, host_vars, reason
):
    started = time.time() - 1
    inventory = test_inventory(**host_vars)
    remote_tmp = tmp_path / "remote-tmp"  # what Ansible keeps or writes for the other modules stays here
    result = make_target(
        "provision",
        inventory,
        ARGS="--tags dummy_user",
        env={"SDENV_DUMMY_PASSWORD": PASSWORD, "ANSIBLE_REMOTE_TMP": str(remote_tmp), **env},
    )
    assert result.returncode != 0
    assert (
        f"refusing to run dummy_account on localhost: its password would end up in a file, because {reason}"
        in result.output
    ), result
    assert not user_exists(inventory.user)
    assert files_holding(PASSWORD, [str(remote_tmp), tempfile.gettempdir()], since=started) == []
