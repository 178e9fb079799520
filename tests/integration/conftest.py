"""Integration fixtures: real make targets against this machine, with throwaway names.

Everything a test creates (users, homes, state directories, inventories) is made here under names no
real setup uses (`sdt` + random hex) and removed afterwards, pass or fail. Nothing else is touched.
"""

import os
import secrets
from pathlib import Path

import pytest
from fixture_host import account_vars, write_inventory
from sdenv_testlib import TestInventory, remove_user, run_make, user_exists


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

    The inventory, its group_vars link and its defaults come from tests/fixtures/fixture_host.py, which the
    macOS workflow's inventory comes from too. The defaults keep the test away from the real record and
    user: a throwaway account, the provision record and the snapshot store under the test's directory.
    """
    directory = tmp_path / "inventory"

    def write(**host_vars):
        variables = {**account_vars(throwaway_user, tmp_path), **host_vars}
        path = write_inventory(directory, variables)
        return TestInventory(
            path, variables["sdenv_user_name"], Path(variables["sdenv_state_dir"]), variables
        )

    return write


@pytest.fixture(scope="session")
def fixture_fleet(tmp_path_factory):
    """Four lab hosts (tests/fixtures/fleet_lab.py) with the fixture upstreams, shared by every fleet test of
    the session and always torn down (namespaces, mounts, processes, veth pairs, the lab directory)."""
    from fleet_fixture import fixture_fleet as start

    with start(tmp_path_factory.mktemp("fleet")) as fleet:
        yield fleet
