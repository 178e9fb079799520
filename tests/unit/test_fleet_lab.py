"""The fleet lab's plan (tests/fixtures/fleet_lab.py): addresses, names, sshd and SSH settings, inventory.
Its real start (namespaces, overlay, sshd) runs in tests/integration/test_fleet.py."""

import ipaddress
import random

import pytest
from fleet_lab import (
    LAB_UID_MIN,
    LabError,
    inventory_data,
    known_hosts_text,
    login_defs_text,
    pick_subnet,
    plan_hosts,
    ssh_common_args,
    sshd_config,
)


def test_the_subnet_overlaps_no_route_of_this_machine():
    used = ["10.64.0.0/10", "10.128.0.0/9", "192.0.2.0/24", "0.0.0.0/0", "fd00::/64"]
    with pytest.raises(LabError, match="overlaps a route"):
        pick_subnet(used, random.Random(1))
    used = ["10.64.0.0/10", "10.128.0.0/10", "10.224.0.0/11", "0.0.0.0/0"]  # leaves 10.192-223.x.y
    for seed in range(20):
        subnet = pick_subnet(used, random.Random(seed))
        assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.ip_network("10.192.0.0/11"))


def test_each_host_has_its_own_slash_30_and_name():
    hosts = plan_hosts("ab12", 4, "10.99.3.0/24", without_sudo=("lab3",))
    assert [h.name for h in hosts] == ["lab1", "lab2", "lab3", "lab4"]
    assert [h.address for h in hosts] == ["10.99.3.6", "10.99.3.10", "10.99.3.14", "10.99.3.18"]
    for host in hosts:
        net = ipaddress.ip_network(f"{host.address}/30", strict=False)
        assert ipaddress.ip_address(host.peer) in net and host.peer != host.address
        assert len(host.ifname) <= 15  # the kernel's limit for an interface name
    assert [h.sudo for h in hosts] == [True, True, False, True]
    with pytest.raises(LabError, match="1 to 63"):
        plan_hosts("ab12", 64, "10.99.3.0/24")
    with pytest.raises(LabError, match="1 to 63"):
        plan_hosts("ab12", 0, "10.99.3.0/24")


def test_sshd_takes_keys_only_on_the_hosts_own_address():
    text = sshd_config("10.99.3.6", "sdtadmin")
    lines = set(text.splitlines())
    assert {"ListenAddress 10.99.3.6", "PasswordAuthentication no", "PermitRootLogin no",
            "AllowUsers sdtadmin", "PubkeyAuthentication yes"} <= lines  # fmt: skip


def test_a_changed_or_unknown_host_key_is_refused_never_added():
    args = ssh_common_args("/lab/known_hosts").split()
    assert "StrictHostKeyChecking=yes" in args and "UserKnownHostsFile=/lab/known_hosts" in args
    assert "GlobalKnownHostsFile=/dev/null" in args


def test_known_hosts_and_inventory_name_every_host():
    hosts = plan_hosts("ab12", 2, "10.99.3.0/24")
    keys = {"lab1": "ssh-ed25519 AAAAone lab1", "lab2": "ssh-ed25519 AAAAtwo lab2"}
    assert known_hosts_text(hosts, keys) == "10.99.3.6 ssh-ed25519 AAAAone\n10.99.3.10 ssh-ed25519 AAAAtwo\n"
    data = inventory_data(
        hosts, "sdtadmin", "/lab/id", "/lab/known_hosts", {"lab2": {"sdenv_user_name": "x"}}
    )
    group = data["all"]["children"]["fleet_lab"]
    assert group["hosts"] == {"lab1": {"ansible_host": "10.99.3.6"},
                              "lab2": {"ansible_host": "10.99.3.10", "sdenv_user_name": "x"}}  # fmt: skip
    assert group["vars"]["ansible_user"] == "sdtadmin" and group["vars"]["ansible_become"] is True
    assert group["vars"]["ansible_connection"] == "ssh"


def test_accounts_made_in_a_lab_host_get_uids_far_from_this_machines():
    debian = "MAIL_DIR /var/mail\nUID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n#SYS_UID_MIN 100\nGID_MIN 1000\n"
    text = login_defs_text(debian)
    assert LAB_UID_MIN > 40000
    assert text.splitlines() == [
        "MAIL_DIR /var/mail", "UID_MAX\t\t\t60000", "#SYS_UID_MIN 100",
        f"UID_MIN {LAB_UID_MIN}", f"GID_MIN {LAB_UID_MIN}",
    ]  # fmt: skip
    assert login_defs_text("") == f"UID_MIN {LAB_UID_MIN}\nGID_MIN {LAB_UID_MIN}\n"
