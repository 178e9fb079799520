"""Each byte once: `make provision` over two hosts fetches every git object, archive, wheel and model from the
fixture upstream once (the fixture server's request log) and the hosts copy them from the controller's cache;
then a cache file corrupted on the controller is fetched again from upstream, never served, while everything
else is neither fetched again nor copied again: the hosts end with the right bytes.

The hosts are two throwaway accounts on this machine (ansible_connection=local, each with its own record,
snapshot store, tools and copy of the cache; tests/fixtures/fleet_cache_fixtures.py). Wheels come from the
fixture's package index over HTTP, so they are in the log too.
"""

import hashlib
import json
import pwd
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fleet_cache_fixtures import fleet, request_counts
from sdenv_testlib import run_make


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def identity(path):
    """What a copy would change: the inode (a rename into place) and the mtime (a write)."""
    st = Path(path).stat()
    return st.st_ino, st.st_mtime_ns


def sums(directory):
    lines = (Path(directory) / "SHA256SUMS").read_text().splitlines()
    return {rel: digest for digest, _, rel in (line.partition("  ") for line in lines)}


@pytest.fixture(scope="module")
def two_hosts():
    with fleet(2) as built:
        yield built


def fetched(counts):
    """The paths that are content (files), not listings: what "fetched once" is about."""
    return {path: n for path, n in counts.items() if not path.endswith("/")}


def test_two_hosts_fetch_every_byte_once(two_hosts):
    server, inventory = two_hosts.server, two_hosts.inventory()
    start = len(server.requests)  # building the fixture's venv locks read the WebUI repository already
    first = run_make("provision", inventory)
    assert first.returncode == 0, first
    counts = request_counts(server.requests[start:])
    files = fetched(counts)
    print(
        f"first run: {len(server.requests) - start} requests, {len(files)} files, {sum(files.values())} file GETs"
    )
    assert files, "the fixture server saw no download at all: the test proves nothing"
    twice = {path: n for path, n in files.items() if n > 1}
    assert not twice, f"fetched from upstream more than once for two hosts: {twice}"
    # Every kind of thing came through the controller: a git object, a wheel, the CLIP archive, a model.
    assert any("/objects/" in path or path.endswith(".pack") for path in files), files
    assert any(path.endswith(".whl") for path in files), files
    assert any(path.startswith("/models/") for path in files), files

    # The cache's lock (a second run sharing the cache waits for this one) went with the run.
    assert not (two_hosts.cache / "run.lock").exists()
    cache = next(two_hosts.cache.iterdir())
    listed = sums(cache)
    for name in two_hosts.hosts:
        copy = two_hosts.host_copy(name)
        assert sums(copy) == listed
        for relative, digest in listed.items():
            assert sha256(copy / relative) == digest, (name, relative)
        home = Path(pwd.getpwnam(two_hosts.hosts[name]["sdenv_user_name"]).pw_dir)
        assert (home / "stable-diffusion-webui" / "venv" / ".sdenv-venv.json").is_file(), name

    # The table under the recap: each host's WebUI commit, ComfyUI's ('-': not chosen here), the lock its venv
    # was built from (the venv's own marker says which) and every enabled model verified.
    lines = first.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST ") and "VENV LOCK" in line)
    header = lines[start]
    for name, variables in two_hosts.hosts.items():
        row = next(line for line in lines[start + 1 :] if line.startswith(name + " "))
        home = Path(pwd.getpwnam(variables["sdenv_user_name"]).pw_dir)
        marker = json.loads((home / "stable-diffusion-webui" / "venv" / ".sdenv-venv.json").read_text())
        models = len(two_hosts.fixture.models)
        assert row[header.index("WEBUI") :].split()[:4] == [
            variables["sdenv_lock"]["webui"]["commit"][:10], "-", marker["inputs"]["lock_sha256"][:12],
            f"{models}/{models}"], first.output  # fmt: skip


def test_a_corrupted_cache_file_is_fetched_again_never_served(two_hosts):
    server, inventory = two_hosts.server, two_hosts.inventory()
    cache = next(two_hosts.cache.iterdir())
    listed = sums(cache)
    served = {m["file"] for m in two_hosts.fixture.models if m["served"]}  # over HTTP: in the server's log
    model = next(rel for rel in listed if rel.startswith("models/") and Path(rel).name in served)
    wheel = next(rel for rel in listed if rel.startswith("wheelhouse/") and rel.endswith(".whl"))
    for relative in (model, wheel):
        path = cache / relative
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes
        path.write_bytes(bytes(data))
        assert sha256(path) != listed[relative]

    # One host lost its copy of the model: it must now take it from the controller, and get the right bytes.
    first_host = next(iter(two_hosts.hosts))
    (two_hosts.host_copy(first_host) / model).unlink()
    # Every other file each host has is checked and skipped, never copied again (same inode, same mtime).
    kept = {
        (name, relative): identity(two_hosts.host_copy(name) / relative)
        for name in two_hosts.hosts
        for relative in listed
        if (name, relative) != (first_host, model)
    }

    before = len(server.requests)
    # DEEP=1: a run with work for the hosts. A run where every host's webui and models roles are unchanged
    # (provision's fast path) takes nothing from the cache, so it would not need the lost copy back.
    result = run_make("provision", inventory, DEEP="1")
    assert result.returncode == 0, result
    again = request_counts(server.requests[before:])
    print(f"after corrupting {model} and {wheel}: requests {dict(again)}")
    assert again[f"/models/{Path(model).name}"] == 1, again
    assert sum(n for path, n in again.items() if path.endswith(Path(wheel).name)) == 1, again
    # Nothing else is fetched: a run with nothing new (here, all but the two) makes no request upstream.
    assert sum(fetched(again).values()) == 2, f"only the two corrupted files are fetched again: {again}"
    # The builder ran again, so its manifest (with its "created" time) is the one file with new bytes.
    now = sums(cache)
    assert {rel for rel in listed if now.get(rel) != listed[rel]} == {"manifest.json"}, now
    recopied = [
        key
        for key, before in kept.items()
        if key[1] != "manifest.json" and identity(two_hosts.host_copy(key[0]) / key[1]) != before
    ]
    assert recopied == [], f"a host copied again a file it had right: {recopied}"
    assert sha256(two_hosts.host_copy(first_host) / model) == listed[model]
    for relative in (model, wheel):
        assert sha256(cache / relative) == listed[relative], f"the cache's {relative} was not fetched again"
        for name in two_hosts.hosts:
            assert sha256(two_hosts.host_copy(name) / relative) == listed[relative], (name, relative)


def test_verify_over_two_hosts_writes_one_report_with_a_section_per_host(two_hosts):
    """make verify over the two hosts the tests above provisioned: one run, one page and one junit.xml, each
    with a section per host (HTML: the overview and a <section> each; JUnit: a <testsuite> each)."""
    inventory = two_hosts.inventory()
    result = run_make("verify", inventory, VERIFY_REPORTS=str(two_hosts.root / "reports"))
    match = re.search(r"^Report: (.+)/index\.html$", result.output, re.M)
    assert match, result
    report = Path(match.group(1))
    page = (report / "index.html").read_text()
    checks = json.loads((report / "checks.json").read_text())
    # The file this make verify just wrote: not untrusted input.
    suites = ET.parse(report / "junit.xml").getroot().findall("testsuite")  # noqa: S314
    names = list(two_hosts.hosts)
    assert [suite.get("name") for suite in suites] == names, result
    for number, (name, suite) in enumerate(zip(names, suites, strict=True)):
        rows = [row for row in checks["checks"] if row["host"] == name]
        assert int(suite.get("tests")) == len(rows) > 10, name
        assert {case.get("classname") for case in suite} == {f"sdenv.verify.{name}"}
        assert f'<section class="host" id="host-{number}">' in page
        assert f'<a href="#host-{number}">{name}: ' in page
        assert checks["hosts"][name]["passed"], [row for row in rows if row["result"] != "PASS"]
        assert int(suite.get("failures")) == int(suite.get("errors")) == 0, name
    assert result.returncode == 0, result
