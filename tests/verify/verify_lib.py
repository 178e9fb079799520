"""Helpers of the verify suite: the per-host target, the check declaration, commands as the dummy."""

import dataclasses
import shlex
from pathlib import Path

import pytest


@dataclasses.dataclass
class Options:
    run_dir: Path
    deep: bool = False
    live: bool = False
    offline: bool = False
    small: bool = False


class NotProvisioned:
    """Stands in for the items of a check whose subject the settings/lock do not define at all."""

    def __init__(self, label, reason):
        self.label, self.reason = label, reason


class NotProvisionedError(Exception):
    pass


class AccountAbsent(Exception):
    """The dummy account is not on the host and nothing of it is left: the row says ABSENT, verify fails."""


class CheckSpec:
    def __init__(self, title, items, label, needs_account=True, key=None, depends=()):
        self.title_format, self.items, self.label_fn = title, items, label
        self.needs_account, self.key, self.depends = needs_account, key, depends

    def row_id(self, item):
        """The row's stable id in checks.json: the check's key, and the item's label for checks with items."""
        if item is None or isinstance(item, NotProvisioned):
            return self.key
        return f"{self.key}:{self.label(item)}"

    def depends_on(self, item):
        """The checks (keys) or rows (key:label) this row needs in place: when one of them fails, this row's
        failure follows from it, and the report folds it under that root cause."""
        depends = self.depends(item) if callable(self.depends) else self.depends
        return list(depends)

    def title(self, item):
        return self.title_format.format(item=item_text(item))

    def label(self, item):
        return self.label_fn(item) if self.label_fn else item_text(item).replace(" ", "_")


def item_text(item):
    if item is None:
        return ""
    if isinstance(item, dict):
        return str(item.get("name") or item.get("dir") or item.get("file") or item)
    return str(item)


def check(title, items=None, label=None, needs_account=True, depends=()):
    """Declare a check: `title` (with {item}) names the row; `items(target)` lists what to check per host
    (raise NotProvisionedError when the settings/lock have no such thing). A check that needs the dummy
    account says NOT PROVISIONED on a host without it (one row, the account's, says why), instead of
    failing on everything the account would own. `depends` names the checks it needs in place (their keys:
    the function name without test_; or "key:label" for one row; or a function of the item returning them),
    so the report shows one root cause with the rows that follow from it folded under it."""

    def decorate(function):
        key = function.__name__.removeprefix("test_")
        function.sdenv_check = CheckSpec(title, items, label, needs_account, key, depends)
        return function

    return decorate


def expand(spec, target):
    if spec.items is None:
        return [None]
    try:
        return list(spec.items(target))
    except NotProvisionedError as exc:
        return [NotProvisioned(spec.title_format.format(item="").strip(), str(exc))]


def failure_text(excinfo):
    """The message of a failed check without pytest's `assert ...` rewriting noise."""
    exc = excinfo.value
    text = str(exc) if str(exc) else exc.__class__.__name__
    if isinstance(exc, AssertionError):
        text = text.split("\nassert ")[0]
    if hasattr(exc, "msg") and isinstance(exc.msg, str):
        text = exc.msg
    return text.strip()


def expect(condition, message):
    """Fail the check with one sentence that names the thing (no traceback in the table)."""
    if not condition:
        pytest.fail(message, pytrace=False)


class Target:
    """One inventory host: the testinfra host, its resolved variables and facts."""

    def __init__(self, name, host, doc, options):
        self.name, self.host, self.doc, self.options = name, host, doc, options
        self.vars = doc["vars"]
        self.facts = doc["facts"]
        self._cache = {}

    def __repr__(self):
        return f"<host {self.name}>"

    @property
    def darwin(self):
        return self.facts["system"] == "Darwin"

    @property
    def user(self):
        return self.vars["sdenv_user_name"]

    def var(self, name, what=None):
        value = self.vars.get(name)
        if value is None:
            raise NotProvisionedError(f"{name} is not defined ({what or 'its role has not landed'})")
        return value

    def lock(self, key):
        lock = self.vars.get("sdenv_lock") or {}
        if key not in lock or lock[key] in (None, [], {}):
            raise NotProvisionedError(f"lock.yml has no sdenv_lock.{key}")
        return lock[key]

    def run(self, command, *args):
        return self.host.run(command, *args)

    def run_as_user(self, command, *args):
        """Run as the dummy, never as root (brew refuses root; files must be readable by the dummy)."""
        with self.host.sudo(self.user):
            return self.host.run(command, *args)

    def account(self):
        """The dummy account as the host's own tools see it ({uid, home, shell}), or None when absent."""

        def read():
            import dummy_accounts  # roles/dummy_user/module_utils: the same parsers the role uses

            if self.darwin:
                out = self.run(
                    "dscl . -read %s UniqueID NFSHomeDirectory UserShell RealName", f"/Users/{self.user}"
                )
                if out.rc != 0:
                    return None
                values = dummy_accounts.parse_dscl_read(out.stdout)
                return {
                    "uid": values.get("UniqueID"),
                    "home": values.get("NFSHomeDirectory"),
                    "shell": values.get("UserShell"),
                }
            out = self.run("getent passwd %s", self.user)
            return dummy_accounts.parse_getent_passwd(out.stdout) if out.rc == 0 else None

        return self.cached("account", read)

    def cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def record_entry(self):
        """The dummy's entry of the provision record (root-owned JSON on the host)."""

        def read():
            import json

            path = self.vars.get("sdenv_state_file") or f"{self.vars['sdenv_state_dir']}/state.json"
            out = self.run("cat %s", path)
            if out.rc != 0:
                return None, f"the provision record {path} cannot be read: {out.stderr.strip()}"
            try:
                record = json.loads(out.stdout)
            except ValueError as exc:
                return None, f"the provision record {path} is not JSON ({exc})"
            entry = (record.get("users") or {}).get(self.user)
            if entry is None:
                return None, f"the provision record {path} has no entry for {self.user}"
            return entry, path

        return self.cached("record", read)

    def component(self, name):
        entry, where = self.record_entry()
        expect(entry is not None, where)
        component = (entry.get("components") or {}).get(name)
        expect(
            component is not None, f"the provision record {where} has no component {name!r} for {self.user}"
        )
        return component


def quote(*words):
    return " ".join(shlex.quote(str(w)) for w in words)
