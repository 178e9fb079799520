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
        ("lab1", "Debian 12 x86_64", "ok", 2, 42.4, "", "", "", "", "", ""),
        ("lab2", "macOS 14.5 arm64", "failed", 0, 11.0, "", "", "", "", "Ensure the dummy admin account exists",
         "useradd: cannot open /etc/passwd"),
        ("lab3", "?", "unreachable", 0, 5.0, "", "", "", "", "Gathering Facts",
         "Failed to connect to the host via ssh: timed out"),
    ]  # fmt: skip
    lines = run.table().splitlines()
    assert lines[0].split() == ["HOST", "PLATFORM", "RESULT", "CHANGED", "TIME", "WEBUI", "COMFYUI", "VENV", "LOCK",
                                "MODELS", "FAILED", "STEP:", "SENTENCE"]  # fmt: skip
    assert lines[1].split() == ["lab1", "Debian", "12", "x86_64", "ok", "2", "42s", "-", "-", "-", "-"]
    assert lines[2].endswith("Ensure the dummy admin account exists: useradd: cannot open /etc/passwd")
    assert all(line == line.rstrip() for line in lines)


# What provision_fastpath's stamp returned on three hosts of one recorded run (provision_record.summary):
# lab1 has everything, lab2 a model still pending, lab3 failed before the stamp (nothing known).
COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
LOCK = "5f0c3e1b9d2a4c6e8f00112233445566778899aabbccddeeff00112233445566"


def test_each_host_shows_the_webui_commit_venv_lock_and_models_the_record_says_it_has(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    run = FleetRun()
    run.finished("lab1", 0.0, facts=DEBIAN)
    run.finished(
        "lab1",
        90.0,
        changed=True,
        facts={"sdenv_host_summary": {"webui_commit": COMMIT, "venv_lock": LOCK, "models": "2/2"}},
    )
    run.finished(
        "lab2",
        0.0,
        facts={**DEBIAN, "sdenv_host_summary": {"webui_commit": COMMIT, "venv_lock": LOCK, "models": "1/2"}},
    )
    run.failed("lab3", "webui : Build the venv", "uv: no matching wheel for torch==2.1.2", 30.0)
    rows = run.rows()
    assert [row[5:9] for row in rows] == [(COMMIT[:10], "", LOCK[:12], "2/2"), (COMMIT[:10], "", LOCK[:12], "1/2"),
                                          ("", "", "", "")]  # fmt: skip
    lines = run.table().splitlines()
    header = lines[0]
    for line, expected in zip(lines[1:], ["82a973c043", "82a973c043", "-"], strict=True):
        # Each cell starts under its heading, so the columns read down.
        assert line[header.index("WEBUI") :].split()[0] == expected, line
    assert lines[1][header.index("VENV LOCK") :].split()[:2] == ["5f0c3e1b9d2a", "2/2"]
    assert lines[2][header.index("MODELS") :].split() == ["1/2"]
    assert lines[3][header.index("WEBUI") :].split()[:4] == ["-", "-", "-", "-"]
    assert lines[3].endswith("webui : Build the venv: uv: no matching wheel for torch==2.1.2")


COMFYUI = "e2d7c8a1f0b94c3d5e6f708192a3b4c5d6e7f809"


def test_comfyuis_commit_shows_where_it_is_chosen_and_a_dash_elsewhere(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    run = FleetRun()
    both = {"webui_commit": COMMIT, "comfyui_commit": COMFYUI, "venv_lock": LOCK, "models": "2/2"}
    run.finished("lab1", 0.0, facts={**DEBIAN, "sdenv_host_summary": both})
    run.finished("lab2", 0.0, facts={**DEBIAN, "sdenv_host_summary": {**both, "comfyui_commit": ""}})
    run.failed("lab3", "comfyui : Build ComfyUI's venv", "uv: no matching wheel", 30.0)
    assert [row[5:7] for row in run.rows()] == [(COMMIT[:10], COMFYUI[:10]), (COMMIT[:10], ""), ("", "")]
    lines = run.table().splitlines()
    column = lines[0].index("COMFYUI")
    assert [line[column:].split()[0] for line in lines[1:]] == [COMFYUI[:10], "-", "-"]
    assert lines[1][lines[0].index("VENV LOCK") :].split()[0] == LOCK[:12]


def test_the_summary_names_comfyuis_commit_only_where_sdenv_apps_chooses_it():
    from provision_record import summary, update

    record = update({"format": 1, "users": {}}, "dummy", {"commit": COMMIT}, component="webui")
    assert summary(record, "dummy", [], comfyui=True)["comfyui_commit"] == ""  # chosen, not provisioned yet
    record = update(record, "dummy", {"path": "/home/dummy/ComfyUI", "commit": COMFYUI}, component="comfyui")
    assert summary(record, "dummy", [], comfyui=True)["comfyui_commit"] == COMFYUI
    # Taken out of sdenv_apps: the record keeps its entry (reset-dummy needs it), the table shows "-".
    assert summary(record, "dummy", [], comfyui=False)["comfyui_commit"] == ""
    assert summary(record, "dummy", [])["webui_commit"] == COMMIT


def test_the_stamp_task_carries_comfyuis_commit_to_the_table_where_it_is_chosen(tmp_path):
    """provision_fastpath's stamp (provision.yml's last host task) over two hosts whose records both name a
    ComfyUI tree: the table shows its commit on the host that chooses it, "-" on the one that does not."""
    import json

    for host in ("h1", "h2"):
        record = {"format": 1, "users": {"dummy": {"components": {
            "webui": {"commit": COMMIT, "venv": {"lock_sha256": LOCK}},
            "comfyui": {"path": "/home/dummy/ComfyUI", "commit": COMFYUI}}}}}  # fmt: skip
        (tmp_path / f"{host}.json").write_text(json.dumps(record))
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"""
- name: The last host task of make provision
  hosts: all
  gather_facts: false
  tasks:
    - name: Record each role that ran in full, for the next run's fast path
      provision_fastpath:
        path: "{tmp_path}/{{{{ inventory_hostname }}}}.json"
        user: dummy
        plan: {{}}
        state: stamp
        comfyui: "{{{{ inventory_hostname == 'h1' }}}}"
"""
    )
    result = run_playbook(playbook, "h1,h2,")
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    column = lines[start].index("COMFYUI")
    cells = {line.split()[0]: line[column:].split()[:2] for line in lines[start + 1 : start + 3]}
    assert cells == {"h1": [COMFYUI[:10], LOCK[:12]], "h2": ["-", LOCK[:12]]}, result.stdout


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
    text = render([("lab1", "Debian 12 x86_64", "ok", 1, 3.0, "", "", "", "", "", "")])
    header, row = text.splitlines()
    assert header.startswith("ホスト") and "成功" in row
    # "ホスト" is 3 characters but 6 columns wide: the next column starts at the same column in both lines.
    assert header.index("プラットフォーム") + 3 == row.index("Debian")


def run_playbook(playbook, hosts, *extra):
    """ansible-playbook over local hosts with the repository's ansible.cfg (its stdout callback), in English."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "LANGUAGE": "en",
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", hosts, "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", *extra, str(playbook)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip


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
    result = run_playbook(playbook, "h1,h2,h3,")
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    rows = [line.split()[:4] for line in lines[start + 1 : start + 4]]
    assert rows == [["h1", "?", "ok", "1"], ["h2", "?", "failed", "0"], ["h3", "?", "ok", "1"]], result.stdout
    assert lines[start + 2].endswith("Fail on h2: h2 is broken on purpose.")


def test_the_summary_is_read_from_the_record_the_roles_wrote():
    from provision_record import summary, update

    record = {"format": 1, "users": {}}
    assert summary(record, "dummy", ["a" * 64]) == {"webui_commit": "", "comfyui_commit": "", "venv_lock": "",
                                                     "models": ""}  # fmt: skip
    record = update(record, "dummy", {"commit": COMMIT, "venv": {"lock": "/x/Linux-x86_64-py3.10.txt",
                                                                "lock_sha256": LOCK}}, component="webui")  # fmt: skip
    # A model file replaced by another (same place, other bytes) no longer counts; a pending model (no pin,
    # "") never does; a file of a model no longer enabled is not counted either.
    record = update(record, "dummy", {"files": {"/s/a.safetensors": "a" * 64, "/s/b.safetensors": "b" * 64,
                                                "/s/old.safetensors": "c" * 64}}, component="models")  # fmt: skip
    assert summary(record, "dummy", ["a" * 64, "b" * 64]) == {"webui_commit": COMMIT, "comfyui_commit": "",
                                                               "venv_lock": LOCK, "models": "2/2"}  # fmt: skip
    record = update(record, "dummy", {"files": {"/s/b.safetensors": "d" * 64}}, component="models")
    assert summary(record, "dummy", ["a" * 64, "b" * 64, ""])["models"] == "1/3"
    assert summary(record, "other", ["a" * 64])["models"] == ""


def test_a_login_user_without_sudo_is_named_with_what_to_do():
    from sdenv_messages import become_failure

    # Ansible 2.19's words (the ssh connection plugin's), as a lab host without sudo gave them.
    said = become_failure("Task failed: Missing sudo password", "lab3", "sdtlab")
    assert said.startswith("lab3: the login user sdtlab cannot become root without a password (sudo asked")
    assert "passwordless sudo on lab3" in said and "ARGS=--ask-become-pass" in said
    refused = become_failure(
        "sdtlab is not in the sudoers file.  This incident will be reported.", "mac1", "ann"
    )
    assert refused.startswith("mac1: the login user ann may not become root (sudo refused it)")
    assert become_failure("Incorrect su password", "h", "u").startswith(
        "h: the login user u may not become root (su"
    )
    assert become_failure("useradd: cannot open /etc/passwd", "lab2", "sdtlab") is None
    assert become_failure(None, "lab2", "sdtlab") is None


def test_the_row_and_the_printed_failure_say_the_toolkits_sentence_not_ansibles(tmp_path):
    """The callback's wiring, with Ansible's words recorded (a fail task stands in for the become failure a
    host without sudo gives: this machine runs the tests as root, where sudo never asks)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        """
- name: The login user of h2 has no sudo
  hosts: all
  gather_facts: false
  tasks:
    - name: Check the values this target uses
      ansible.builtin.fail:
        msg: "Task failed: Missing sudo password"
      when: inventory_hostname == 'h2'
"""
    )
    result = run_playbook(playbook, "h1,h2,", "-e", "ansible_user=sdtlab")
    sentence = "h2: the login user sdtlab cannot become root without a password (sudo asked for one)"
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    assert sentence in lines[start + 2], result.stdout
    assert lines[start + 2].split()[:3] == ["h2", "?", "failed"]
    assert "  " + sentence in result.stdout.split("PLAY RECAP")[0]  # the failure as printed
    assert "Missing sudo password" not in result.stdout
