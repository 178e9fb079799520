"""The whole life of a fleet over SSH (issue 24, items 2 and 5): four lab hosts (tests/fixtures/fleet_lab.py,
each reached only over SSH as a non-root login with sudo) provisioned from the fixture upstreams with the fleet
cache on, verified, snapshotted, one host changed and rolled back alone (LIMIT=), then every dummy reset, and
one host's dummy removed for good (remove-dummy LIMIT=). While the provision holds the controller's fleet cache,
a second real make run on that cache (make fleet-cache-prune, the cheapest) is refused, naming the provision.

The destructive targets name every host they will touch before they ask: a reset-dummy without CONFIRM over
the fleet names the four, and is refused with nothing changed; a rollback with LIMIT= names that host alone.

One module-scoped lab of its own (the provision leaves a WebUI, a venv and snapshots on each host, which the
dummy_user-only tests of test_fleet.py's session lab must not see), torn down pass or fail. Fixture-size trees,
the SMALL setting the fixture gives, no LIVE: this costs the CI about one provision of four hosts.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections import Counter
from xml.etree import ElementTree

import pytest
from sdenv_testlib import MakeResult, make_argv, run_make

WEBUI_USER_SH = "stable-diffusion-webui/webui-user.sh"


@pytest.fixture(scope="module")
def lab_fleet(tmp_path_factory):
    from fleet_fixture import fixture_fleet

    directory = tmp_path_factory.mktemp("fleet-life")
    try:
        with fixture_fleet(directory, count=4) as fleet:
            yield fleet, directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the controller's fleet cache (root's files) with it


def recap(output):
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from Ansible's PLAY RECAP lines."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match:
            rows[match.group(1)] = {
                key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))
            }
    return rows


def file_digests(lab, path):
    """{host: sha256 of the file at path (as root) or None}."""
    seen = {}
    for host in lab.hosts:
        read = lab.ssh(host.name, f"sudo -n cat {path}")
        seen[host.name] = hashlib.sha256(read.stdout.encode()).hexdigest() if read.returncode == 0 else None
    return seen


def read_or_nothing(path):
    """The file's text, or "" while it is not there (the lock's file comes and goes with the run)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def provision_and_prune_meanwhile(inventory, cache, out):
    """`make provision` of the inventory in the background and, once its fill holds the fleet cache's lock
    (run.lock with the run's record in it), `make fleet-cache-prune` on the same cache: (provision, prune)
    MakeResults. The provision is ended, whatever happens here, before this returns."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "LANGUAGE": "en"}
    lock = cache / "run.lock"
    with open(out, "w+", encoding="utf-8") as output:
        process = subprocess.Popen(make_argv("provision", inventory), stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)  # fmt: skip
        try:
            while process.poll() is None and '"target"' not in read_or_nothing(lock):
                time.sleep(0.2)  # a wait for the lock, not a measurement
            if process.poll() is not None:
                output.seek(0)
                pytest.fail(
                    f"make provision ended before it held the fleet cache's lock:\n{output.read()[-6000:]}"
                )
            prune = run_make("fleet-cache-prune", FLEET_CACHE_DIR=str(cache), env={"LANGUAGE": "en"})
            process.wait(timeout=1800)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
        output.seek(0)
        text = output.read()
    return MakeResult(subprocess.CompletedProcess(process.args, process.returncode, stdout=text)), prune


def test_a_fleet_is_provisioned_verified_snapshotted_rolled_back_and_reset_over_ssh(lab_fleet, make_target):
    fleet, directory = lab_fleet

    def make(target, inventory, **variables):  # each run's whole output, for the report of a failure
        began = time.monotonic()  # printed for the CI budget, never asserted
        result = make_target(target, inventory, **variables)
        print(f"--- make {target} {variables} exit {result.returncode} in {time.monotonic() - began:.0f} s")
        print(result.output)
        return result

    lab, user, server = fleet.lab, fleet.user, fleet.server
    names = [host.name for host in lab.hosts]
    inventory = fleet.write_inventory(
        directory / "life-inventory",
        # Wheels from the fixture's index over HTTP, so the server's log sees them too; the controller's cache
        # in this test's directory.
        sdenv_webui_wheelhouse="",
        sdenv_webui_pip_index_url=f"{server.url}/index/simple",
        sdenv_fleet_cache_dir=str(directory / "controller-cache"),
    )
    home = f"/home/{user}"

    # 1. Provision the four at once, each byte fetched once from upstream for all of them. While it holds the
    # controller's fleet cache, a second make run on that cache (a prune, the cheapest) is refused, naming it.
    start = len(server.requests)
    cache = directory / "controller-cache"
    provision, prune = provision_and_prune_meanwhile(inventory, cache, directory / "provision.out")
    print(f"--- make provision exit {provision.returncode}\n{provision.output}")
    assert provision.returncode == 0, provision
    assert prune.returncode == 2, prune  # make's own status for a recipe that failed
    assert re.match(
        rf"sdenv: make provision, pid \d+ on \S+, started at [^,]+ is using the fleet cache {re.escape(str(cache))}:"
        r" run make fleet-cache-prune again after it ends\.\n",
        prune.output,
    ), prune
    assert sorted(recap(provision.output)) == names, provision
    assert all(row["failed"] == 0 and row["unreachable"] == 0 for row in recap(provision.output).values())
    counts = Counter(urllib.parse.urlsplit(path).path for path in server.requests[start:])
    files = {path: n for path, n in counts.items() if not path.endswith("/")}
    assert not {path: n for path, n in files.items() if n > 1}, f"fetched more than once for 4 hosts: {files}"
    assert any("/objects/" in path or path.endswith(".pack") for path in files), files
    assert any(path.endswith(".whl") for path in files), files
    assert any(path.startswith("/models/") for path in files), files
    for host in names:
        venv = lab.ssh(host, f"sudo -n test -f {home}/stable-diffusion-webui/venv/.sdenv-venv.json")
        assert venv.returncode == 0, (host, venv.stderr)

    # 2. Verify: green on every host (pytest's JUnit XML: no failure, no error, checks on each of the four).
    verify = make("verify", inventory, VERIFY_REPORTS=str(directory / "reports"), timeout=1200)
    assert verify.returncode == 0, verify
    (junit,) = (directory / "reports").glob("verify-*/junit.xml")
    # One <testsuite> per host, named after it.
    suites = ElementTree.parse(junit).getroot().findall("testsuite")  # noqa: S314 - what make verify wrote here
    assert [(s.get("name"), s.get("failures"), s.get("errors")) for s in suites] == [
        (name, "0", "0") for name in names
    ], verify
    checked = {suite.get("name"): len(suite.findall("testcase")) for suite in suites}
    assert min(checked.values()) >= 40, checked

    # 3. Snapshot every host; change one host's webui-user.sh.
    label = "sdtlife"
    snapshot = make("snapshot", inventory, LABEL=label, timeout=600)
    assert snapshot.returncode == 0, snapshot
    assert sorted(recap(snapshot.output)) == names, snapshot
    before = file_digests(lab, f"{home}/{WEBUI_USER_SH}")
    assert None not in before.values(), before
    changed = lab.ssh("lab2", f"sudo -n -u {user} sh -c 'echo export SDT_DRIFT=1 >> {home}/{WEBUI_USER_SH}'")
    assert changed.returncode == 0, changed.stderr
    drifted = file_digests(lab, f"{home}/{WEBUI_USER_SH}")
    assert drifted["lab2"] != before["lab2"]

    # 4. Roll back that host alone: it is named (alone) before the question, and only it is touched.
    rollback = make("rollback", inventory, LIMIT="lab2", TO=label, CONFIRM="yes", timeout=600)
    assert rollback.returncode == 0, rollback
    assert f"make rollback restores snapshot {label} on 1 host: lab2." in rollback.output, rollback
    assert sorted(recap(rollback.output)) == ["lab2"], rollback
    assert file_digests(lab, f"{home}/{WEBUI_USER_SH}") == before

    # 5. reset-dummy over the fleet without CONFIRM: every host named first, then refused, nothing changed.
    refused = make("reset-dummy", inventory, timeout=600, env={"LANGUAGE": "en"})
    assert refused.returncode == 2, refused
    named = f"make reset-dummy deletes the account {user} on 4 hosts: lab1, lab2, lab3, lab4."
    flat = " ".join(refused.output.split())  # the debug message is wrapped
    assert named in flat, refused
    assert flat.index(named) < flat.index("Not confirmed: nothing was changed on lab1, lab2, lab3, lab4."), (
        refused
    )
    assert file_digests(lab, f"{home}/{WEBUI_USER_SH}") == before

    # 6. reset-dummy CONFIRM=yes: every account is deleted and made again, empty.
    reset = make("reset-dummy", inventory, CONFIRM="yes", timeout=600)
    assert reset.returncode == 0, reset
    assert named in " ".join(reset.output.split()), reset  # named with CONFIRM=yes too
    for host in names:
        account = lab.ssh(host, f"getent passwd {user} && sudo -n test ! -e {home}/stable-diffusion-webui")
        assert account.returncode == 0, (host, account.stdout, account.stderr)

    # 7. remove-dummy over SSH on one host (LIMIT=): only it is named and its account and home are gone for
    # good; the other three keep theirs.
    remove = make("remove-dummy", inventory, LIMIT="lab3", CONFIRM="yes", timeout=600, env={"LANGUAGE": "en"})
    assert remove.returncode == 0, remove
    assert f"make remove-dummy deletes the account {user} on 1 host: lab3." in " ".join(remove.output.split())
    assert sorted(recap(remove.output)) == ["lab3"], remove
    for host in names:
        account = lab.ssh(host, f"getent passwd {user}; sudo -n test -d {home}; echo $?")
        present = (account.stdout.startswith(f"{user}:"), account.stdout.split()[-1] == "0")
        assert present == ((False, False) if host == "lab3" else (True, True)), (host, account.stdout)
