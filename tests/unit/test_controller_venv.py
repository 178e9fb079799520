"""scripts/controller-venv.sh: picks a supported Python, reuses .venv, rebuilds on a requirements change."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "controller-venv.sh"
TOOLS = ["bash", "sha256sum", "cut", "cat", "rm", "env", "dirname"]


def sandbox_path(tmp_path, pythons):
    """A PATH holding only the shell tools the script needs plus the given fake or real pythons."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for name, target in pythons.items():
        (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def run_script(tmp_path, path, requirements):
    env = {"PATH": path, "SDENV_VENV": str(tmp_path / "venv"), "SDENV_REQUIREMENTS": str(requirements)}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def test_without_a_supported_python_it_says_how_to_get_one(tmp_path):
    old_python = tmp_path / "python3"  # the macOS Command Line Tools' 3.9, or its installer stub
    old_python.write_text("#!/bin/sh\necho 'Python 3.9.6'\nexit 1\n")
    old_python.chmod(0o755)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    result = run_script(tmp_path, sandbox_path(tmp_path, {"python3": old_python}), requirements)
    assert result.returncode == 1
    assert "No Python 3.11-3.13 found for the controller" in result.stderr
    assert "brew install python@3.12" in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(
    not (3, 11) <= sys.version_info[:2] <= (3, 13), reason="needs a supported Python to build with"
)
def test_reuses_the_venv_until_the_requirements_change(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing to install\n")
    path = sandbox_path(tmp_path, {"python3.11": sys.executable})

    first = run_script(tmp_path, path, requirements)
    assert first.returncode == 0, first.stderr
    assert "Setting up the controller environment" in first.stderr
    python = tmp_path / "venv" / "bin" / "python"
    built = os.lstat(python).st_ino

    again = run_script(tmp_path, path, requirements)
    assert again.returncode == 0 and again.stderr == "" and again.stdout == ""
    assert os.lstat(python).st_ino == built

    requirements.write_text("# changed\n")
    rebuilt = run_script(tmp_path, path, requirements)
    assert rebuilt.returncode == 0 and "Setting up the controller environment" in rebuilt.stderr
