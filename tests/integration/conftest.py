"""Integration fixtures: real make targets against this machine, with throwaway names.

Everything a test creates (users, homes, state directories, inventories) is made here under names no
real setup uses (`sdt` + random hex) and removed afterwards, pass or fail. Nothing else is touched.
"""

import os
import secrets
from pathlib import Path

import pytest
import yaml
from sdenv_testlib import ROOT, TestInventory, remove_user, run_make, user_exists


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(
            reason="integration tests create users and install packages: run them as root"
        )
        for item in items:
            if "integration" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def make_target():
    return run_make


@pytest.fixture
def throwaway_user():
    """A user name nobody uses; the account (if a test made it) is removed afterwards."""
    name = "sdt" + secrets.token_hex(4)
    assert not user_exists(name)
    yield name
    remove_user(name)


@pytest.fixture
def test_inventory(tmp_path, throwaway_user):
    """Write an inventory for this machine that reads the repository's settings and lock, with the
    given host variables on top. Returns a function: write(**host_vars) -> TestInventory (a path that
    also carries .user, .state_dir and .variables).

    The repository's group_vars are linked next to the test inventory, because Ansible reads group_vars
    from the inventory's own directory. The defaults keep the test away from the real record and user.
    """
    directory = tmp_path / "inventory"
    directory.mkdir()
    (directory / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    state_dir = tmp_path / "state"

    def write(**host_vars):
        variables = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "sdenv_user_name": throwaway_user,
            "sdenv_state_dir": str(state_dir),
            # Snapshots (the known-good one at the end of provision) stay in the test's directory too.
            "sdenv_snapshot_store": str(tmp_path / "snapshots"),
            **host_vars,
        }
        path = directory / "hosts.yml"
        path.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": variables}}}, sort_keys=False))
        return TestInventory(
            path, variables["sdenv_user_name"], Path(variables["sdenv_state_dir"]), variables
        )

    return write
