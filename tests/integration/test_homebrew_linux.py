"""Role homebrew on Linux and role python, through the real `make provision` / `make reset-dummy` (root).

Installs the configured apt packages for real (plus `hello`, a tiny package this machine does not normally
have, to see the record tell newly installed packages apart; it is removed afterwards only if this test
installed it). Runs the interpreter resolution as the throwaway dummy, with a broken pyenv-like shim
offered first to show that candidates are run, not trusted by name.
"""

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from login_profile_block import count_lines
from sdenv_testlib import ROOT

EXTRA_PACKAGE = "hello"
# Only the roles under test (and the account they need): the later roles have their own tests and fixtures.
ONLY_THESE_ROLES = "--tags dummy_user,homebrew,python"
SHIM = "#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n"


def installed(package):
    done = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${db:Status-Abbrev}", package], capture_output=True, text=True
    )
    return done.returncode == 0 and done.stdout.startswith("ii")


def record(inventory):
    with open(inventory.state_dir / "state.json", encoding="utf-8") as handle:
        return json.load(handle)


# The lines the role's defaults put in a Linux dummy's login profile.
PROFILE_LINES = [
    'case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH" ;; esac',
    "export PATH",
]


@pytest.fixture(scope="module")
def extra_package():
    """`hello` for the test; uninstalled afterwards only when this test installed it."""
    had_it = installed(EXTRA_PACKAGE)
    yield had_it
    if not had_it and installed(EXTRA_PACKAGE):
        subprocess.run(
            ["apt-get", "remove", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", EXTRA_PACKAGE],
            capture_output=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


@pytest.fixture
def shim_dir():
    """A directory the dummy can read, holding a python3.10 that exists and fails, like a pyenv shim."""
    directory = tempfile.mkdtemp(prefix="sdt-shim-")
    os.chmod(directory, 0o755)  # noqa: S103 - the dummy user must be able to run the shim
    path = os.path.join(directory, "python3.10")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SHIM)
    os.chmod(path, 0o755)  # noqa: S103 - likewise
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def provisioned(test_inventory, make_target, extra_package, shim_dir):
    settings = ROOT / "inventory" / "group_vars" / "all" / "settings.yml"
    packages = yaml.safe_load(settings.read_text(encoding="utf-8"))["sdenv_linux_packages"]
    inventory = test_inventory(
        sdenv_linux_packages=[*packages, EXTRA_PACKAGE],
        sdenv_python_extra_candidates=[shim_dir],
    )
    result = make_target("provision", inventory, ARGS=ONLY_THESE_ROLES)
    assert result.returncode == 0, result
    return inventory, result, packages


def test_provision_installs_the_packages_writes_the_profile_once_and_picks_the_fallback_python(
    provisioned, extra_package, shim_dir
):
    inventory, result, packages = provisioned
    for package in [*packages, EXTRA_PACKAGE]:
        assert installed(package), f"{package} is not installed after provision"

    home = pwd.getpwnam(inventory.user).pw_dir
    profile = os.path.join(home, ".zprofile")  # the dummy's shell is zsh
    text = Path(profile).read_text(encoding="utf-8")
    for line in PROFILE_LINES:
        assert count_lines(text, line) == 1, text
    assert os.stat(profile).st_uid == pwd.getpwnam(inventory.user).pw_uid

    homebrew = record(inventory)["users"][inventory.user]["components"]["homebrew"]
    assert homebrew["package_manager"] == "apt" and homebrew["installed_by_toolkit"] is False
    assert set(homebrew["packages"]) == {*packages, EXTRA_PACKAGE}
    # Host-wide: the record's shared part, which outlives the dummy's entry.
    added = record(inventory)["shared"]["packages_installed_by_toolkit"]
    assert (EXTRA_PACKAGE in added) is (not extra_package)
    assert "git" not in added, "git was there before: not the toolkit's"
    assert "packages_installed_by_toolkit" not in homebrew

    python = record(inventory)["users"][inventory.user]["components"]["python"]
    assert python["path"] == "/usr/bin/python3.11" and python["version"].startswith("3.11.")
    assert python["preferred"] is False
    warning = " ".join(result.output.split())
    assert "Using /usr/bin/python3.11 (Python 3.11" in warning and "instead of Python 3.10" in warning
    assert "Debian 12 has no python3.10 package" in warning
    assert f"{shim_dir} exists but does not run (exit 127" in warning
    assert "torch pins have no wheels for Python 3.12" in warning


def test_second_run_and_check_mode_change_nothing_and_run_no_apt(provisioned, make_target):
    inventory, _, _ = provisioned
    again = make_target("provision", inventory, ARGS=ONLY_THESE_ROLES)
    assert again.returncode == 0, again
    assert again.recap["changed"] == 0, again
    # The install task is skipped (skipped tasks print no banner here) and apt is never called.
    assert "Install the missing packages" not in again.output, again
    assert "Install python3.10" not in again.output.replace(
        "Install python3.10 where the distribution has it, else offer the fallback", ""
    )

    dry = make_target("provision", inventory, CHECK=1, ARGS=ONLY_THESE_ROLES)
    assert dry.returncode == 0, dry
    assert dry.recap["changed"] == 0, dry


def test_a_profile_line_written_by_hand_is_not_repeated(provisioned, make_target):
    inventory, _, _ = provisioned
    profile = os.path.join(pwd.getpwnam(inventory.user).pw_dir, ".zprofile")
    by_hand = "# mine\n" + "\n".join(PROFILE_LINES) + "\n"
    with open(profile, "w", encoding="utf-8") as handle:
        handle.write(by_hand)
    result = make_target("provision", inventory, ARGS=ONLY_THESE_ROLES)
    assert result.returncode == 0, result
    assert Path(profile).read_text(encoding="utf-8") == by_hand
    assert "outside the sdenv managed block: left where the user wrote it" in " ".join(
        result.output.split()
    ), result


@contextlib.contextmanager
def arm_homebrew_prefix():
    """/opt/homebrew made by this test, with a marker (None when it exists: never somebody else's)."""
    prefix = Path("/opt/homebrew")
    try:
        prefix.mkdir()
    except FileExistsError:
        yield None
        return
    marker = prefix / f".sdt-{os.getpid()}"
    marker.write_text("made by test_homebrew_linux\n")
    (prefix / "bin").mkdir()
    (prefix / "bin" / "brew").write_text("#!/bin/sh\n")
    try:
        yield prefix
    finally:
        if marker.exists():
            shutil.rmtree(prefix)


def record_homebrew_prefix(inventory, prefix):
    """What the macOS path records for a Homebrew it installed: the prefix, outside the home."""
    state = record(inventory)
    entry = state["users"][inventory.user]
    entry["components"]["homebrew"].update(prefix=str(prefix), installed_by_toolkit=True)
    entry["created_paths"] = [str(prefix)]
    (inventory.state_dir / "state.json").write_text(json.dumps(state))


def test_reset_dummy_removes_only_the_homebrew_prefix_the_toolkit_installs(
    provisioned, make_target, tmp_path
):
    inventory, _, packages = provisioned
    shared_before = record(inventory)["shared"]
    # A prefix the toolkit never installs Homebrew into is refused, FORCE or not, and nothing changes.
    elsewhere = tmp_path / "homebrew-prefix"
    (elsewhere / "bin").mkdir(parents=True)
    record_homebrew_prefix(inventory, elsewhere)
    refused = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
    assert refused.returncode != 0, refused
    words = " ".join(refused.output.split())
    assert f"Refusing to delete {elsewhere} (the provision record lists it for {inventory.user})" in words
    assert "is not /opt/homebrew or /usr/local, the only prefixes the toolkit installs Homebrew into" in words
    assert elsewhere.exists() and pwd.getpwnam(inventory.user)

    # Apple Silicon's /opt/homebrew, the whole prefix: reset removes it and leaves an unrecorded bystander.
    bystander = tmp_path / "someone-elses-homebrew"
    bystander.mkdir()
    with arm_homebrew_prefix() as prefix:
        if prefix is None:
            pytest.skip("/opt/homebrew exists on this machine: the test only deletes a prefix it made itself")
        record_homebrew_prefix(inventory, prefix)
        result = make_target("reset-dummy", inventory, CONFIRM="yes")
        assert result.returncode == 0, result
        assert not prefix.exists(), "the Homebrew prefix the record names survived the reset"
    assert bystander.exists() and elsewhere.exists()
    # System packages are shared by every user: reset leaves them installed, and the record keeps knowing
    # which of them the toolkit added.
    for package in packages:
        assert installed(package), f"reset-dummy removed the system package {package}"
    after = record(inventory)
    assert "homebrew" not in after["users"][inventory.user].get("components", {})
    assert after["shared"] == shared_before


def test_a_login_profile_linked_to_a_root_only_file_is_refused_and_the_file_untouched(
    provisioned, make_target, tmp_path
):
    # Root edits the dummy's profile: a link the dummy put there is neither read nor written through.
    inventory, _, _ = provisioned
    account = pwd.getpwnam(inventory.user)
    profile = Path(account.pw_dir, ".zprofile")
    secret = tmp_path / "secret"
    secret.write_text("root-only secret\n", encoding="utf-8")
    secret.chmod(0o600)
    profile.unlink()
    profile.symlink_to(secret)
    os.lchown(profile, account.pw_uid, account.pw_gid)
    result = make_target("provision", inventory, ARGS=ONLY_THESE_ROLES)
    assert result.returncode != 0, result
    assert f"{profile} is a symbolic link that another account can change" in " ".join(result.output.split())
    st = secret.stat()
    assert secret.read_text(encoding="utf-8") == "root-only secret\n"
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
    assert profile.is_symlink()
