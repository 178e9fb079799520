"""The table a fleet run ends with (plugins/module_utils/sdenv_fleet_table.py, printed by sdenv_stdout)."""

import os
import subprocess
import sys
from pathlib import Path

from sdenv_fleet_table import FleetRun, describe_platform, first_line, render

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = {"ansible_system": "Linux", "ansible_distribution": "Debian", "ansible_distribution_major_version": "12",
          "ansible_distribution_version": "12.8", "ansible_architecture": "x86_64"}  # fmt: skip
MAC = {"system": "Darwin", "distribution": "MacOSX", "distribution_version": "14.5", "architecture": "arm64"}


def test_the_platform_reads_as_a_person_names_it():
    assert describe_platform(DEBIAN) == "Debian 12 x86_64"
    assert describe_platform(MAC) == "macOS 14.5 arm64"
    assert describe_platform({"sdenv_preflight_passed": True}) == ""


def test_each_host_gets_its_result_changes_time_and_the_first_failures_sentence(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    run = FleetRun()
    for name in ("lab2", "lab1", "lab3"):
        run.started(name, 10.0)
    run.finished("lab1", 11.0, facts=DEBIAN)
    run.finished("lab1", 40.0, changed=True)
    run.finished("lab1", 52.4, changed=True)
    run.finished("lab2", 11.0, facts=MAC)
    run.failed(
        "lab2", "Ensure the dummy admin account exists", "useradd: cannot open /etc/passwd\nmore", 20.0
    )
    run.failed("lab2", "A cleanup after it", "not the reason", 21.0)
    run.failed(
        "lab3", "Gathering Facts", "Failed to connect to the host via ssh: timed out", 15.0, unreachable=True
    )
    assert run.rows() == [
        ("lab1", "Debian 12 x86_64", "ok", 2, 42.4, "", ""),
        ("lab2", "macOS 14.5 arm64", "failed", 0, 11.0, "Ensure the dummy admin account exists",
         "useradd: cannot open /etc/passwd"),
        ("lab3", "?", "unreachable", 0, 5.0, "Gathering Facts", "Failed to connect to the host via ssh: timed out"),
    ]  # fmt: skip
    lines = run.table().splitlines()
    assert lines[0].split() == [
        "HOST",
        "PLATFORM",
        "RESULT",
        "CHANGED",
        "TIME",
        "FAILED",
        "STEP:",
        "SENTENCE",
    ]
    assert lines[1].split() == ["lab1", "Debian", "12", "x86_64", "ok", "2", "42s"]
    assert lines[2].endswith("Ensure the dummy admin account exists: useradd: cannot open /etc/passwd")
    assert all(line == line.rstrip() for line in lines)


def test_a_host_that_did_not_fail_when_the_run_was_cut_short_was_stopped(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    run = FleetRun()
    run.finished("lab1", 1.0)
    run.failed("lab2", "Check every setting", "sdenv_user_name: 'root' is not allowed", 2.0)
    run.cut_short = True  # any_errors_fatal (the preflight) or MAX_FAIL
    assert [row[2] for row in run.rows()] == ["stopped", "failed"]


def test_a_long_sentence_is_cut_and_japanese_headings_keep_the_columns(monkeypatch):
    assert first_line("x" * 250) == "x" * 197 + "..."
    monkeypatch.setenv("LANGUAGE", "ja")
    text = render([("lab1", "Debian 12 x86_64", "ok", 1, 3.0, "", "")])
    header, row = text.splitlines()
    assert header.startswith("ホスト") and "成功" in row
    # "ホスト" is 3 characters but 6 columns wide: the next column starts at the same column in both lines.
    assert header.index("プラットフォーム") + 3 == row.index("Debian")


def test_a_run_over_several_hosts_ends_with_the_table(tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        """
- name: One host fails, the others go on
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail on h2
      ansible.builtin.fail:
        msg: h2 is broken on purpose.
      when: inventory_hostname == 'h2'
    - name: Change something
      ansible.builtin.command: "true"
"""
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "LANGUAGE": "en",
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "h1,h2,h3,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    rows = [line.split()[:4] for line in lines[start + 1 : start + 4]]
    assert rows == [["h1", "?", "ok", "1"], ["h2", "?", "failed", "0"], ["h3", "?", "ok", "1"]], result.stdout
    assert lines[start + 2].endswith("Fail on h2: h2 is broken on purpose.")
