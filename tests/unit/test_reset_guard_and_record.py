"""reset-dummy's refusals and the provision record, as pure logic."""

import json
import os
import stat

import pytest
from provision_record import RecordError, check_removable, forget_user, load, save, update
from reset_guard import reset_refusal

RECORDED = {"uid": 1001, "created_by_toolkit": True}
ACCOUNT = {"uid": 1001}


def refusal(name="dummy", account=ACCOUNT, invoking=("admin",), console=(), recorded=RECORDED, force=False):
    return reset_refusal(name, account, 1000, list(invoking), set(console), recorded, force)


def test_a_recorded_account_may_be_reset():
    assert refusal() is None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "root", "account": {"uid": 0}}, "root account"),
        ({"account": {"uid": 0}}, "root account"),
        ({"account": {"uid": 999}}, "below 1000"),
        ({"invoking": ["dummy"]}, "running this command"),
        ({"console": ["dummy"]}, "logged in at the console"),
        ({"recorded": None}, "does not say this toolkit created it"),
        ({"recorded": {"uid": 1001, "created_by_toolkit": False}}, "does not say this toolkit created it"),
        ({"recorded": {"uid": 1234, "created_by_toolkit": True}}, "provision record says 1234"),
    ],
)
def test_refusals(kwargs, words):
    message = refusal(**kwargs)
    assert message and words in message and message.startswith("Refusing to reset")


def test_force_lifts_only_the_record_checks():
    assert refusal(recorded=None, force=True) is None
    assert refusal(recorded={"uid": 5, "created_by_toolkit": True}, force=True) is None
    assert "below" in refusal(account={"uid": 10}, force=True)
    assert "console" in refusal(console=["dummy"], force=True)
    assert "running" in refusal(invoking=["dummy"], force=True)


def test_an_account_already_gone_lets_the_record_leftovers_go():
    assert refusal(account=None) is None


def test_record_update_merge_and_idempotence(tmp_path):
    path = tmp_path / "state" / "state.json"
    record = load(path)
    assert record == {"format": 1, "users": {}}
    record = update(record, "dummy", {"uid": 1001, "created_by_toolkit": True}, timestamp="T0")
    record = update(
        record, "dummy", {"prefix": "/opt/homebrew"}, component="homebrew", created_paths=["/opt/homebrew"]
    )
    entry = record["users"]["dummy"]
    assert entry["created_at"] == "T0"
    assert entry["components"]["homebrew"] == {"prefix": "/opt/homebrew"}
    assert entry["created_paths"] == ["/opt/homebrew"]
    # The same update again is a no-op, timestamps included.
    assert (
        update(
            record,
            "dummy",
            {"prefix": "/opt/homebrew"},
            component="homebrew",
            created_paths=["/opt/homebrew"],
        )
        == record
    )
    # None removes a key; remove_paths drops a path.
    record = update(record, "dummy", {"prefix": None}, component="homebrew", remove_paths=["/opt/homebrew"])
    assert record["users"]["dummy"]["components"]["homebrew"] == {}
    assert record["users"]["dummy"]["created_paths"] == []

    save(path, record)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert load(path) == record
    assert not [p for p in os.listdir(path.parent) if p.startswith(".state.")], "a temp file was left behind"
    assert forget_user(record, "dummy")["users"] == {}


def test_record_refuses_unreadable_or_foreign_files(tmp_path):
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="cannot be read"):
        load(bad)
    bad.write_text(json.dumps({"format": 99, "users": {}}))
    with pytest.raises(RecordError, match="not a format-1 record"):
        load(bad)


@pytest.mark.parametrize(
    "path", ["/", "/usr/local", "/opt", "/Users", "/home", "relative/path", "/opt/../etc", "/top", "/etc/"]
)
def test_removable_paths_refuse_system_directories(path):
    with pytest.raises(RecordError):
        check_removable(path)


@pytest.mark.parametrize("path", ["/opt/homebrew", "/usr/local/Homebrew", "/var/lib/sdenv/extra"])
def test_removable_paths_allow_what_the_toolkit_makes(path):
    assert check_removable(path) == path


def test_update_refuses_a_protected_created_path():
    with pytest.raises(RecordError):
        update({"format": 1, "users": {}}, "dummy", created_paths=["/usr/local"])
