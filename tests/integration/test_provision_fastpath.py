"""make provision's fast path for real (issue 21): a run with nothing changed skips every role; DEEP=1 runs
them in full; and a file changed in the WebUI tree, a package removed, a model touched and a setting edited
each make the role that owns it run in full, which repairs it and reports its changes. One account is
provisioned for the module (the fixture host of tests/fixtures/fixture_host.py) and shared by the tests, which
run in file order. The four drifts are made together and found by one run (each names its own reason): a full
WebUI run costs about a minute here, and this module's budget is a few minutes (tests/unit/test_fastpath.py
takes each drift alone)."""

import json
import os
import pwd
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fixture_host import FixtureHost, account_vars, write_inventory
from sdenv_testlib import ROOT, TestInventory, remove_user, run_make, user_exists
from webui_fixtures import serve_http

ALL_ROLES = ["dummy_user", "homebrew", "known_good", "models", "python", "webui"]
# A small package this module adds to the account's sdenv_linux_packages (so provision installs it), removes
# to show the drift, and uninstalls at the end when it was not installed before.
PACKAGE = "sl"


def skipped(result):
    """The roles the run skipped as unchanged (its own line: playbooks/provision.yml)."""
    match = re.search(r"Unchanged since the last full run \(inputs and outputs as recorded\), skipped:\s*([^.]*)\.",
                      re.sub(r"\s+", " ", result.output))  # fmt: skip
    names = match.group(1).replace(" ", "").split(",") if match else []
    return sorted(n for n in names if n != "none")


def installed(package):
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return status.returncode == 0 and status.stdout.endswith(" installed")


def apt(*argv):
    subprocess.run(
        ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *argv],
        capture_output=True,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """One account provisioned against the fixture host for every test here; removed at the end."""
    user = "sdt" + secrets.token_hex(4)
    assert not user_exists(user)
    work = tmp_path_factory.mktemp("fastpath")
    root = Path(f"/tmp/sdt-fast-{os.getpid()}-{secrets.token_hex(4)}")
    inventory = None
    had_package = installed(PACKAGE)
    settings = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all" / "settings.yml").read_text())
    try:
        host = FixtureHost(root)
        with serve_http(host.served) as server:
            variables = {
                **account_vars(user, work),
                **host.host_vars(server.url, sdenv_webui_python="/usr/bin/python3"),
                "sdenv_linux_packages": [*settings["sdenv_linux_packages"], PACKAGE],
            }
            inventory = TestInventory(
                write_inventory(work / "inventory", variables),
                user,
                Path(variables["sdenv_state_dir"]),
                variables,
            )
            first = run_make("provision", inventory)
            assert first.returncode == 0, first
            yield inventory
    finally:
        if inventory is not None and user_exists(user):
            run_make("remove-dummy", inventory, CONFIRM="yes")
        remove_user(user)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        if not had_package and installed(PACKAGE):
            apt("remove", PACKAGE)


def provision(inventory, **variables):
    result = run_make("provision", inventory, **variables)
    assert result.returncode == 0, result
    return result


def in_full(result):
    """{role: reason} of the roles the run ran in full (its own line: playbooks/provision.yml)."""
    text = re.sub(r"\s+", " ", result.output).partition("Run in full: ")[2].partition("TASK [")[0]
    return dict(re.findall(r"\b(" + "|".join(ALL_ROLES) + r") \(([^()]*)\)", text))


def settle():
    """A change made after this has a later mtime than what the last run stamped (coarse file-system clocks)."""
    time.sleep(1.1)


def modules_run(result):
    """How many times each module ran on the host (Ansible's -vvv says "Using module file" for each run)."""
    names = re.findall(r"Using module file \S*/([\w.]+)\.py\b", result.output)
    return {name: names.count(name) for name in names}


def test_a_run_with_nothing_changed_skips_every_role(provisioned):
    result = provision(provisioned, ARGS="-vvv")
    assert skipped(result) == ALL_ROLES and in_full(result) == {}, result
    assert result.recap["changed"] == 0, result
    # The preflight looks at the host once (facts, accounts, paths, ports, the record and the sources in one
    # module run) and no play gathers facts again.
    ran = modules_run(result)
    assert ran.get("preflight_facts") == 1 and "setup" not in ran, ran
    assert "sources_reachable" not in ran and "provision_record" not in ran, ran
    # The run lock is taken in that same module run and let go by the callback: no module run of its own.
    assert "sdenv_run_lock" not in ran, ran


def test_the_reading_targets_leave_nothing_for_the_fast_path_to_find(provisioned, tmp_path):
    """make snapshot, make verify LIVE=1 and make provision CHECK=1 leave nothing the next provision has work
    for: it still skips every role. (git status took the index lock in each repository for its refresh, and
    the .git directories' changed mtimes made every provision after a verify or a snapshot run the webui role
    in full; LIVE=1 starts the WebUI, which writes its bytecode, params.txt and cache/ into its tree.)"""
    settle()
    for target, variables in (
        ("snapshot", {}),
        ("verify", {"VERIFY_REPORTS": str(tmp_path / "reports"), "LIVE": "1"}),
        ("provision", {"CHECK": "1"}),
    ):
        result = run_make(target, provisioned, **variables)
        assert result.returncode == 0, result
    after = provision(provisioned)
    assert in_full(after) == {} and after.recap["changed"] == 0, after


def test_deep_runs_the_full_path(provisioned):
    # One role is enough to show the switch (a full run of every role costs minutes here).
    result = provision(provisioned, DEEP="1", ARGS="--tags dummy_user")
    assert skipped(result) == [] and in_full(result) == {"dummy_user": "DEEP=1"}, result
    assert result.recap["changed"] == 0, result


def test_drift_runs_the_role_that_owns_it_in_full(provisioned):
    record = json.loads((provisioned.state_dir / "state.json").read_text())["users"][provisioned.user]
    webui = Path(record["components"]["webui"]["path"])
    launcher = webui / "webui-user.sh"
    written = launcher.read_bytes()
    model = Path(next(iter(record["components"]["models"]["files"])))
    model_bytes = model.read_bytes()
    assert installed(PACKAGE), f"{PACKAGE} is in the account's sdenv_linux_packages: provision installs it"
    settle()
    with open(launcher, "a", encoding="utf-8") as handle:  # a file changed in the WebUI tree
        handle.write("# edited by hand\n")
    apt("remove", PACKAGE)  # a package removed
    assert not installed(PACKAGE)
    os.utime(model)  # a model touched: same bytes, a new mtime
    fullname = "Dummy " + secrets.token_hex(2)  # a setting edited (one only dummy_user uses)
    write_inventory(provisioned.path.parent, {**provisioned.variables, "sdenv_user_fullname": fullname})

    result = provision(provisioned)
    reasons = in_full(result)
    assert skipped(result) == [], result
    assert reasons.get("webui") == f"{webui} changed", reasons
    assert reasons.get("homebrew") == "/var/lib/dpkg/status changed", reasons
    assert reasons.get("models", "").endswith(" changed"), reasons
    assert reasons.get("dummy_user") == "its inputs changed: settings", reasons
    # each role repaired what drifted, and said so: the launcher, the package, the account's full name
    assert launcher.read_bytes() == written
    assert installed(PACKAGE)
    assert pwd.getpwnam(provisioned.user).pw_gecos.split(",")[0] == fullname
    assert model.read_bytes() == model_bytes
    assert result.recap["changed"] >= 3, result

    # the full run recorded what it left: the next one skips every role again and changes nothing
    again = provision(provisioned)
    assert skipped(again) == ALL_ROLES and again.recap["changed"] == 0, again
