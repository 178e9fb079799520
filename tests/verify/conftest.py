"""The `make verify` suite's machinery: hosts, per-host variables, check rows, the table and the report.

Hosts come from testinfra's `--hosts` (the same inventory as provision, through testinfra's ansible
backend); each host's resolved settings and lock come from the JSON file playbooks/verify.yml wrote for it
(`--sdenv-run DIR/vars/<inventory name>.json`). Only hosts with such a file are checked, so LIMIT applies.

A check is a test function marked with `@verify_lib.check("title {item}", items=...)`: it runs once per host
and item (each formula, each model, ...) and becomes one row of the table.
"""

import json
import os
import time
from pathlib import Path

import pytest
import testinfra
import verify_lib
import verify_report

ROWS_KEY = pytest.StashKey[list]()
IMAGES_KEY = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("sdenv", "sdenv make verify")
    group.addoption("--sdenv-run", help="the run directory: vars/<host>.json in, report files out")
    group.addoption("--sdenv-junit", help="write junit.xml here: one <testsuite> per host")
    group.addoption("--sdenv-deep", action="store_true", help="re-hash every model file (DEEP=1)")
    group.addoption("--sdenv-live", action="store_true", help="start the WebUI and generate (LIVE=1)")
    group.addoption("--sdenv-offline", action="store_true", help="LIVE with the network cut (OFFLINE=1)")
    group.addoption("--sdenv-small", action="store_true", help="LIVE: the small image setting (SMALL=1)")


def pytest_configure(config):
    config.stash[ROWS_KEY] = []
    config.stash[IMAGES_KEY] = []
    run = config.getoption("--sdenv-run")
    if not run:
        raise pytest.UsageError("tests/verify runs through `make verify` (it needs --sdenv-run DIR).")
    options = verify_lib.Options(
        run_dir=Path(run),
        deep=config.getoption("--sdenv-deep"),
        live=config.getoption("--sdenv-live") or config.getoption("--sdenv-offline"),
        offline=config.getoption("--sdenv-offline"),
        small=config.getoption("--sdenv-small"),
    )
    config.sdenv_options = options
    config.sdenv_targets = load_targets(config, options)


def inventory_name(host):
    backend = host.backend
    return getattr(backend, "host", None) or backend.get_hostname()


def load_targets(config, options):
    var_files = {p.stem: p for p in sorted((options.run_dir / "vars").glob("*.json"))}
    if not var_files:
        raise pytest.UsageError(
            f"No host variables in {options.run_dir / 'vars'}: playbooks/verify.yml wrote none."
        )
    hosts = testinfra.get_hosts((config.getoption("hosts") or "local://").split(","))
    by_name = {inventory_name(h): h for h in hosts}
    targets = []
    for name, path in var_files.items():
        if name not in by_name:
            raise pytest.UsageError(
                f"Ansible resolved variables for {name}, but testinfra's --hosts has no such host."
            )
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
        targets.append(verify_lib.Target(name, by_name[name], doc, options))
    return targets


def pytest_generate_tests(metafunc):
    spec = getattr(metafunc.function, "sdenv_check", None)
    if spec is None:
        return
    params = []
    for target in metafunc.config.sdenv_targets:
        for item in verify_lib.expand(spec, target):
            label = item.label if isinstance(item, verify_lib.NotProvisioned) else spec.label(item)
            params.append(pytest.param(target, item, id=f"{target.name}:{label}"))
    metafunc.parametrize(["target", "item"], params)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A check whose subject turns out to be undefined (a role that has not landed) says so: skip, with
    "not provisioned" and the reason, never a pass."""
    if not hasattr(pyfuncitem.function, "sdenv_check"):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    target = kwargs.get("target")
    if pyfuncitem.function.sdenv_check.needs_account and target is not None and target.account() is None:
        pytest.skip(f"not provisioned: the dummy user {target.user} does not exist on this host")
    try:
        pyfuncitem.obj(**kwargs)
    except verify_lib.NotProvisionedError as exc:
        pytest.skip(f"not provisioned: {exc}")
    return True


@pytest.fixture(autouse=True)
def _not_provisioned(request):
    item = request.node.callspec.params.get("item") if hasattr(request.node, "callspec") else None
    if isinstance(item, verify_lib.NotProvisioned):
        pytest.skip(f"not provisioned: {item.reason}")


@pytest.fixture
def note(request):
    """note(text): the detail shown for a passing check (what was found)."""

    def add(text):
        request.node.user_properties.append(("detail", str(text)))

    return add


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    spec = getattr(getattr(item, "function", None), "sdenv_check", None)
    if spec is None or not hasattr(item, "callspec"):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        target, value = item.callspec.params["target"], item.callspec.params["item"]
        if report.passed:
            result = "PASS"
            detail = "; ".join(v for k, v in item.user_properties if k == "detail") or "ok"
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            if reason.startswith("got empty parameter set"):
                return  # nothing of this kind on this host (no formulae on Linux, no LIVE run asked)
            result = "NOT PROVISIONED" if reason.startswith("not provisioned") else "SKIP"
            if reason.startswith("pending: "):
                result = "PENDING"  # a model file the user still fetches by hand (model_pending)
            detail = reason.removeprefix("not provisioned: ").removeprefix("pending: ")
        else:
            failed = call.excinfo.errisinstance((AssertionError, pytest.fail.Exception))
            result = "FAIL" if report.when == "call" and failed else "ERROR"
            if call.excinfo.errisinstance(verify_lib.AccountAbsent):
                result = "ABSENT"
            detail = verify_lib.failure_text(call.excinfo)
        title = value.label if isinstance(value, verify_lib.NotProvisioned) else spec.title(value)
        item.config.stash[ROWS_KEY].append(
            {
                "check": title,
                "id": spec.row_id(value),
                "host": target.name,
                "result": result,
                "detail": detail,
                "depends_on": spec.depends_on(value),
                "seconds": report.duration,
            }
        )
        for image in getattr(item, "sdenv_images", []):
            item.config.stash[IMAGES_KEY].append(image)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash[ROWS_KEY]
    if not rows or not hasattr(config, "sdenv_options"):
        return
    run_dir = config.sdenv_options.run_dir
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    title = verify_report.page_title(started)
    page = verify_report.write_html(rows, config.stash[IMAGES_KEY], title, str(run_dir))
    verify_report.write_checks_json(rows, config.stash[IMAGES_KEY], str(run_dir))
    junit = config.getoption("--sdenv-junit")
    if junit:
        verify_report.write_junit(rows, junit, time.strftime("%Y-%m-%dT%H:%M:%S"))
    terminalreporter.write_sep("=", "sdenv verify")
    terminalreporter.write_line(
        verify_report.terminal_text(rows, page, os.path.abspath(junit) if junit else None)
    )
