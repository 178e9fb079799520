"""ansible.cfg's SSH settings as make verify's testinfra reads them: each host's checks go over the connection
Ansible opened for the run (one ControlPath per host), not a new SSH login per check (192 checks over 4 lab
hosts took 154 s that way, 34 s reusing it)."""

import os
from pathlib import Path

import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

ROOT = Path(__file__).resolve().parents[2]


def test_verify_checks_reuse_ansibles_ssh_connection_per_host(tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")  # as make verify
    (tmp_path / ".ansible" / "cp").mkdir(parents=True)  # Ansible makes it on its first SSH connection
    inventory = tmp_path / "hosts.yml"
    hosts = {"lab1": {"ansible_host": "10.0.0.6"}, "lab2": {"ansible_host": "10.0.0.10"}}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": {"ansible_user": "admin"}}}))
    runner = AnsibleRunner(str(inventory))
    for name in hosts:
        backend = runner.get_host(name).backend
        assert backend.NAME == "ssh"
        assert (
            backend.controlpath == str(tmp_path / ".ansible" / "cp") + os.sep + "%%C"
        )  # ssh's hash of the host
        argv, args = backend._build_ssh_command("true")
        command = " ".join(argv) % tuple(args)
        assert "ControlMaster=auto" in command and "ControlPersist=60s" in command
        assert f"-o ControlPath={tmp_path}/.ansible/cp/%C" in command
