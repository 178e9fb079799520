"""Choosing the WebUI's Python: candidates are RUN, never trusted by name.

These tests run real interpreters: this machine's own Python and small scripts made in a temp dir that
behave like a broken pyenv shim, a too-new Python and a Python without ensurepip.
"""

import os
import stat
import subprocess
import sys

import pytest
from python_resolution import (
    PROBE,
    ResolutionError,
    apt_status,
    locate,
    parse_apt_policy,
    parse_probe,
    parse_version,
    resolve,
)

WHY = "WebUI v1.10.1's torch pins have no wheels for 3.12"
BOUNDS = {"minimum": (3, 10), "below": (3, 12), "preferred": (3, 10), "why": WHY}

# Real output of `apt-cache policy python3.10 python3.10-venv python3.11` on this Debian 12 machine:
# apt reads the unknown name `python3.10` as a regular expression and answers for libpython3.10-stdlib.
APT_POLICY_DEBIAN12 = """\
libpython3.10-stdlib:
  Installed: (none)
  Candidate: (none)
  Version table:
python3.11:
  Installed: 3.11.2-6+deb12u6
  Candidate: 3.11.2-6+deb12u9
  Version table:
     3.11.2-6+deb12u9 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 3.11.2-6+deb12u6 100
        100 /var/lib/dpkg/status
"""
# Recorded shape (Ubuntu 22.04, where python3.10 is the distribution's Python; not captured here).
APT_POLICY_UBUNTU2204 = """\
python3.10:
  Installed: (none)
  Candidate: 3.10.12-1~22.04.7
  Version table:
     3.10.12-1~22.04.7 500
        500 http://archive.ubuntu.com/ubuntu jammy-updates/main amd64 Packages
python3.10-venv:
  Installed: (none)
  Candidate: 3.10.12-1~22.04.7
  Version table:
"""


def script(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def fake_python(directory, name, version, venv=True):
    """A script that answers the probe as a Python of `version` would (with or without ensurepip)."""
    tail = (
        "echo venv-ok\n"
        if venv
        else "echo \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n"
    )
    return script(directory, name, f'echo {version}\necho "$0"\n{tail}')


def run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def pyenv_shim(tmp_path):
    # The text a pyenv shim prints for a version that is installed but not selected (as on this machine).
    return script(
        tmp_path,
        "python3.10",
        "cat >&2 <<'EOF'\npyenv: python3.10: command not found\n\n"
        "The `python3.10' command exists in these Python versions:\nEOF\nexit 127\n",
    )


def test_probe_on_this_interpreter():
    rc, out, err = run([sys.executable, "-c", PROBE])
    version, venv_ok, failure = parse_probe(rc, out, err)
    assert version == tuple(sys.version_info[:3]) and venv_ok and failure == ""


def test_parse_version():
    assert parse_version("3.10.14") == (3, 10, 14)
    assert parse_version("3.10") == (3, 10)
    assert parse_version("pyenv: python3.10: command not found") is None


def test_a_shim_that_exists_but_fails_is_skipped_for_the_fallback_with_a_warning(tmp_path, pyenv_shim):
    fallback = fake_python(tmp_path, "python3.11", "3.11.2")
    chosen = resolve([pyenv_shim, fallback], run, context="Debian 12 has no python3.10 package", **BOUNDS)
    assert chosen["path"] == fallback and chosen["version"] == "3.11.2" and chosen["preferred"] is False
    assert chosen["rejected"] == [
        {"candidate": pyenv_shim, "reason": "exists but does not run (exit 127: The `python3.10' command exists"
         " in these Python versions:)"},
    ]  # fmt: skip
    warning = chosen["warning"]
    assert warning.startswith(f"Using {fallback} (Python 3.11.2) instead of Python 3.10, because")
    assert "Debian 12 has no python3.10 package" in warning and warning.endswith(WHY + ".")


def test_the_preferred_version_gives_no_warning(tmp_path):
    good = fake_python(tmp_path, "python3.10", "3.10.14")
    chosen = resolve([good, fake_python(tmp_path, "python3.11", "3.11.2")], run, **BOUNDS)
    assert (chosen["path"], chosen["preferred"], chosen["warning"]) == (good, True, "")


def test_bare_names_are_looked_up_on_the_given_path(tmp_path):
    good = fake_python(tmp_path, "python3.10", "3.10.14")
    assert locate("python3.10", str(tmp_path)) == good
    assert locate("python3.10", str(tmp_path / "nowhere")) is None
    chosen = resolve(["python3.10"], run, search_path=str(tmp_path), **BOUNDS)
    assert chosen["path"] == good


def test_versions_outside_the_bounds_and_pythons_without_venv_are_rejected(tmp_path):
    too_new = fake_python(tmp_path, "python3.12", "3.12.3")
    too_old = fake_python(tmp_path, "python3.9", "3.9.6")
    no_venv = fake_python(tmp_path, "python3.11", "3.11.2", venv=False)
    with pytest.raises(ResolutionError) as caught:
        resolve([too_new, too_old, no_venv, str(tmp_path / "absent")], run, **BOUNDS)
    message = str(caught.value)
    assert message.startswith("No usable Python >= 3.10, < 3.12 for the WebUI (")
    assert f"{too_new} is Python 3.12.3, outside >= 3.10, < 3.12" in message
    assert f"{too_old} is Python 3.9.6, outside" in message
    assert f"{no_venv} is Python 3.11.2 but cannot create virtual environments" in message
    assert "install python3.11-venv" in message and f"{tmp_path / 'absent'} not found" in message
    assert message.endswith("set sdenv_python_fallback to one the dummy user can run.")


def test_this_machines_python311_is_accepted_as_the_fallback():
    if not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("no /usr/bin/python3.11 on this machine")
    chosen = resolve(["/usr/bin/python3.11"], run, **BOUNDS)
    assert chosen["version"].startswith("3.11.") and chosen["warning"]


def test_apt_policy_matches_names_exactly_not_apts_regex_fallback():
    found = parse_apt_policy(APT_POLICY_DEBIAN12)
    assert "python3.10" not in found and found["libpython3.10-stdlib"]["candidate"] is None
    assert found["python3.11"] == {"installed": "3.11.2-6+deb12u6", "candidate": "3.11.2-6+deb12u9"}
    status = apt_status(lambda argv: (0, APT_POLICY_DEBIAN12, ""), ["python3.10", "python3.10-venv"])
    assert status == {
        "python3.10": {"installed": None, "candidate": None},
        "python3.10-venv": {"installed": None, "candidate": None},
    }


def test_apt_policy_on_a_distribution_with_python310():
    status = apt_status(lambda argv: (0, APT_POLICY_UBUNTU2204, ""), ["python3.10", "python3.10-venv"])
    assert status["python3.10"] == {"installed": None, "candidate": "3.10.12-1~22.04.7"}
    assert status["python3.10-venv"]["candidate"] == "3.10.12-1~22.04.7"
