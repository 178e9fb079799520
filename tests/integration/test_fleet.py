"""A fleet over SSH (issue 24): lab hosts that are hosts of their own, provisioned, verified, snapshotted,
rolled back and reset together. One session-scoped lab of four hosts (conftest.py: fixture_fleet) serves
every test here; each test reads or changes only what it made (its own dummy on the hosts, its own files)."""

import contextlib
import os
import secrets
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


@contextlib.contextmanager
def useradd_broken_on(lab, name):
    """/etc/passwd read-only on one lab host (a bind mount in that host's own mount namespace): useradd
    fails there after the preflight passed, as a real host's surprise would. Undone afterwards."""
    broken = lab.ssh(name, "sudo mount --bind /etc/passwd /etc/passwd && "
                           "sudo mount -o remount,bind,ro /etc/passwd")  # fmt: skip
    assert broken.returncode == 0, broken.stderr
    try:
        yield
    finally:
        lab.ssh(name, "sudo umount /etc/passwd")


@contextlib.contextmanager
def sudo_taken_away_on(lab, name):
    """The login user without sudo on one lab host (an admin account that is not one); given back after."""
    rule = f"/etc/sudoers.d/sdtlab-{lab.login_user}"
    lab.as_host_root(name, "mv", rule, "/root/sdtlab-sudoers")
    try:
        yield
    finally:
        lab.as_host_root(name, "mv", "/root/sdtlab-sudoers", rule)


def table_rows(output):
    """{host: {"platform", "result", "changed", "failure"}} from the fleet table under the recap, cut at the
    header's column starts (a platform has spaces in it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST ") and "RESULT" in line)
    header = lines[start]
    cuts = [header.index(word) for word in ("PLATFORM", "RESULT", "CHANGED", "TIME", "FAILED STEP")]
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("lab"):
            break
        cells = [line[a:b].strip() for a, b in zip([0, *cuts], [*cuts, None], strict=True)]
        rows[cells[0]] = {"platform": cells[1], "result": cells[2], "changed": cells[3], "failure": cells[5]}
    return rows


def accounts(lab, user):
    return {host.name: lab.ssh(host.name, f"getent passwd {user}").returncode == 0 for host in lab.hosts}


def test_provision_over_ssh_goes_on_past_a_failed_host_and_ends_with_one_table(
    fixture_fleet, make_target, tmp_path
):
    lab, user = fixture_fleet.lab, "sdt" + secrets.token_hex(4)
    inventory = fixture_fleet.write_inventory(tmp_path / "inventory", sdenv_user_name=user)
    with useradd_broken_on(lab, "lab2"):
        run = make_target(
            "provision", inventory, ARGS="--tags dummy_user", timeout=600, env={"LANGUAGE": "en"}
        )
    assert run.returncode == 2, run
    rows = table_rows(run.output)
    assert sorted(rows) == ["lab1", "lab2", "lab3", "lab4"], run
    for name in ("lab1", "lab3", "lab4"):
        assert (rows[name]["platform"], rows[name]["result"], rows[name]["changed"]) == (
            "Debian 12 x86_64",
            "ok",
            "2",
        ), run
    assert rows["lab2"]["result"] == "failed", run  # the account and its record were the 2 changes above
    assert rows["lab2"]["failure"].startswith("dummy_user : Ensure the dummy admin account exists: "), run
    assert "(useradd) failed (exit 1): useradd: cannot open /etc/passwd." in rows["lab2"]["failure"], run
    assert "Stopped with errors on 1 of 4 hosts: lab2." in run.output
    assert accounts(lab, user) == {"lab1": True, "lab2": False, "lab3": True, "lab4": True}
    assert subprocess.run(["getent", "passwd", user], capture_output=True, check=False).returncode == 2


def test_a_rolling_run_stops_after_a_batch_with_more_failures_than_max_fail(
    fixture_fleet, make_target, tmp_path
):
    lab, user = fixture_fleet.lab, "sdt" + secrets.token_hex(4)
    inventory = fixture_fleet.write_inventory(tmp_path / "inventory", sdenv_user_name=user)
    with useradd_broken_on(lab, "lab1"):
        run = make_target("provision", inventory, ARGS="--tags dummy_user", SERIAL="2", MAX_FAIL="0",
                          timeout=600, env={"LANGUAGE": "en"})  # fmt: skip
    assert run.returncode == 2, run
    results = {name: row["result"] for name, row in table_rows(run.output).items()}
    assert results == {"lab1": "failed", "lab2": "stopped", "lab3": "stopped", "lab4": "stopped"}, run
    # lab2 was in lab1's batch and went through it; lab3 and lab4 were never started.
    assert accounts(lab, user) == {"lab1": False, "lab2": True, "lab3": False, "lab4": False}


def test_an_unreachable_host_and_a_login_without_sudo_are_named_and_the_preflight_stops_the_rest(
    fixture_fleet, make_target, tmp_path
):
    lab, user = fixture_fleet.lab, "sdt" + secrets.token_hex(4)
    inventory = fixture_fleet.write_inventory(
        tmp_path / "inventory", host_vars={"lab4": {"ansible_port": 2}}, sdenv_user_name=user
    )  # nothing listens on lab4's port 2: what a host whose sshd is down looks like
    with sudo_taken_away_on(lab, "lab3"):
        run = make_target(
            "provision", inventory, ARGS="--tags dummy_user", timeout=600, env={"LANGUAGE": "en"}
        )
    assert run.returncode in (2, 4), run
    rows = table_rows(run.output)
    assert {name: row["result"] for name, row in rows.items()} == {
        "lab1": "stopped", "lab2": "stopped", "lab3": "failed", "lab4": "unreachable"}, run  # fmt: skip
    assert rows["lab3"]["failure"].startswith("Check the values this target uses"), run  # before any change
    # The toolkit's sentence naming the host and the login user, not Ansible's "Missing sudo password": whole
    # in the printed failure, cut to the table's width in the row.
    sentence = (
        f"lab3: the login user {lab.login_user} cannot become root without a password (sudo asked for one), "
        f"so nothing can be checked or changed there; give {lab.login_user} passwordless sudo on lab3 (a line "
        f"`{lab.login_user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/), or run again with "
        "ARGS=--ask-become-pass to type its password."
    )
    assert "\n  " + sentence + "\n" in run.output, run
    assert sentence[:120] in rows["lab3"]["failure"], run
    assert "Missing sudo password" not in run.output, run
    assert "port 2: Connection refused" in rows["lab4"]["failure"], run
    assert accounts(lab, user) == dict.fromkeys(["lab1", "lab2", "lab3", "lab4"], False)
