"""A fleet over SSH (issue 24): lab hosts that are hosts of their own, provisioned, verified, snapshotted,
rolled back and reset together. One session-scoped lab of four hosts (conftest.py: fixture_fleet) serves
every test here; each test reads or changes only what it made (its own dummy on the hosts, its own files)."""

import os
import subprocess

import pytest
import yaml
from sdenv_testlib import ROOT, command_lines_holding


def test_each_lab_host_is_a_host_of_its_own_reached_only_by_ssh_with_a_key(fixture_fleet):
    lab = fixture_fleet.lab
    name = "sdtonly" + fixture_fleet.user[3:]
    made = lab.ssh("lab1", f"sudo -n useradd {name} && getent passwd {name}")
    assert made.returncode == 0, made.stderr
    for host in lab.hosts:
        seen = lab.ssh(host.name, f"hostname; id -un; sudo -n id -u; getent passwd {name} || echo absent; "
                                  f"curl -s -o /dev/null -w '%{{http_code}}\\n' {fixture_fleet.server.url}/")  # fmt: skip
        assert seen.returncode == 0, seen.stderr
        hostname, login, root_uid, account, http = seen.stdout.split("\n")[:5]
        assert (hostname, login, root_uid) == (host.name, lab.login_user, "0")
        assert (account == "absent") == (host.name != "lab1"), account  # dummy on one is not on another
        assert http == "200"  # the fixture upstreams at the same URL inside every host
    assert subprocess.run(["getent", "passwd", name], capture_output=True, check=False).returncode == 2
    refused = lab.ssh("lab2", "true", user="root")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_a_changed_host_key_is_refused_and_named(fixture_fleet, tmp_path):
    lab = fixture_fleet.lab
    swapped = tmp_path / "known_hosts"  # lab2's address with lab1's key: what a replaced host looks like
    lines = lab.known_hosts.read_text().splitlines()
    swapped.write_text(f"{lines[1].split()[0]} {' '.join(lines[0].split()[1:])}\n")
    argv = ["ssh", "-i", str(lab.key_file), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={swapped}",
            "-o", "StrictHostKeyChecking=yes", f"{lab.login_user}@{lab.host('lab2').address}", "true"]  # fmt: skip
    refused = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert swapped.read_text().count("\n") == 1  # nothing was added or replaced


def test_make_fleet_lab_starts_hosts_writes_an_inventory_and_fleet_lab_down_removes_it_all(make_target):
    lab_dir, pid_file = ROOT / "fleet-lab", ROOT / "fleet-lab.pid"
    if lab_dir.exists() or pid_file.exists():
        pytest.skip(f"a lab of the user's runs from {lab_dir}: this test would stop it")
    try:
        up = make_target("fleet-lab", N="2", timeout=300)
        assert up.returncode == 0, up
        inventory = yaml.safe_load((lab_dir / "inventory" / "hosts.yml").read_text())
        hosts = inventory["all"]["children"]["fleet_lab"]["hosts"]
        assert sorted(hosts) == ["lab1", "lab2"]
        again = make_target("fleet-lab", N="2", timeout=300)  # one lab per directory, named
        assert again.returncode == 2 and "run make fleet-lab-down first" in again.output, again
        pinged = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible"), "-i", str(lab_dir / "inventory" / "hosts.yml"), "all",
             "-m", "ansible.builtin.command", "-a", "hostname"],
            capture_output=True, text=True, check=False, env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        )  # fmt: skip
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
        assert "lab1 | CHANGED" in pinged.stdout and "lab2 | CHANGED" in pinged.stdout
        addresses = [host["ansible_host"] for host in hosts.values()]
    finally:
        down = make_target("fleet-lab-down", timeout=300)
    assert down.returncode == 0, down
    assert not lab_dir.exists() and not pid_file.exists()
    links = subprocess.run(["ip", "-4", "-br", "address"], capture_output=True, text=True, check=True).stdout
    assert not any(address.rsplit(".", 1)[0] + "." in links for address in addresses)  # no veth left
    assert not command_lines_holding(str(lab_dir / "keys"))  # every host's pid 1 (its config is under keys/)
