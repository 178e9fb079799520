"""reset-dummy's and remove-dummy's refusals, their deletion plan, and the provision record."""

import json
import os
import pwd
import stat

import pytest
from provision_record import STATE_DIR_MODE, RecordError, ensure_state_dir, forget_user, load, save, update
from reset_guard import deletion_plan, reset_refusal

RECORDED = {"uid": 1001, "created_by_toolkit": True}
ACCOUNT = {"uid": 1001}


def refusal(
    name="dummy",
    account=ACCOUNT,
    invoking=("admin",),
    console=(),
    recorded=RECORDED,
    force=False,
    action="reset",
):
    return reset_refusal(name, account, 1000, list(invoking), set(console), recorded, force, action)


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
    # remove-dummy refuses the same accounts, in its own words.
    message = refusal(**kwargs, action="remove")
    assert message and words in message and message.startswith("Refusing to remove")


def test_force_lifts_only_the_record_checks():
    assert refusal(recorded=None, force=True) is None
    assert refusal(recorded={"uid": 5, "created_by_toolkit": True}, force=True) is None
    assert "below" in refusal(account={"uid": 10}, force=True)
    assert "console" in refusal(console=["dummy"], force=True)
    assert "running" in refusal(invoking=["dummy"], force=True)


def test_an_account_already_gone_lets_the_record_leftovers_go():
    assert refusal(account=None) is None
    # Whoever made it: the account is gone, what the record lists was the toolkit's.
    assert refusal(account=None, recorded={"uid": 1001, "created_by_toolkit": False}) is None


def test_resetting_an_account_that_does_not_exist_says_so():
    message = refusal(account=None, recorded=None)
    assert message.startswith("There is no account dummy on this host")
    assert "nothing to reset" in message and "make provision" in message
    assert "FORCE" not in refusal(account=None, recorded=None, force=True)
    # remove-dummy: nothing to do is not an error (the module says "nothing to remove").
    assert refusal(account=None, recorded=None, action="remove") is None
    # Root and the caller are refused by name even when no such account exists.
    assert "root account" in refusal(name="root", account=None, recorded=None, action="remove")


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


def test_forgetting_a_user_keeps_what_the_host_shares():
    record = update({"format": 1, "users": {}}, "dummy", {"uid": 1001}, timestamp="T0")
    record = update(record, "dummy", shared={"packages_installed_by_toolkit": ["cmake", "rustc"]})
    record = update(record, "other", {"uid": 1002}, timestamp="T0")
    forgotten = forget_user(record, "dummy")
    assert forgotten["shared"] == {"packages_installed_by_toolkit": ["cmake", "rustc"]}
    assert list(forgotten["users"]) == ["other"]


def test_a_legacy_record_moves_the_packages_list_to_the_shared_part(tmp_path):
    path = tmp_path / "state.json"
    legacy = {
        "format": 1,
        "users": {
            "dummy": {
                "uid": 1001,
                "components": {
                    "homebrew": {"package_manager": "apt", "packages_installed_by_toolkit": ["wget", "bc"]}
                },
            }
        },
    }
    path.write_text(json.dumps(legacy))
    record = load(path)
    assert record["shared"] == {"packages_installed_by_toolkit": ["bc", "wget"]}
    assert record["users"]["dummy"]["components"]["homebrew"] == {"package_manager": "apt"}


def test_the_state_directory_gets_one_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        directory = tmp_path / "var" / "lib" / "sdenv"
        assert ensure_state_dir(str(directory), check_mode=True) == (True, None)
        assert not directory.exists()
        assert ensure_state_dir(str(directory)) == (True, None)
        assert stat.S_IMODE(os.stat(directory).st_mode) == STATE_DIR_MODE == 0o755
        assert stat.S_IMODE(os.stat(directory.parent).st_mode) == 0o755
        assert ensure_state_dir(str(directory)) == (False, 0o755)
        # Made 0700 by an older run (or by hand): corrected, and said so.
        os.chmod(directory, 0o700)
        assert ensure_state_dir(str(directory)) == (True, 0o700)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        # Saving the record into a missing state directory creates it the same way.
        other = tmp_path / "other" / "sdenv"
        save(other / "state.json", {"format": 1, "users": {}})
        assert stat.S_IMODE(os.stat(other).st_mode) == 0o755
    finally:
        os.umask(old)


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
def test_a_record_never_names_a_system_directory(path):
    with pytest.raises(RecordError):
        update({"format": 1, "users": {}}, "dummy", created_paths=[path])


# --- The deletion plan, on this machine's file system (a Linux layout under a temporary root) ---------

DUMMY_UID = 1001


def cloned_as_the_dummy(path):
    """Give `path` the dummy's uid, as roles webui and comfyui leave the trees they clone. Only root can; as
    any other user the tests that need it are skipped."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory the dummy's uid needs root")
    os.chown(path, DUMMY_UID, DUMMY_UID)


@pytest.fixture
def host(tmp_path):
    """A home root with the dummy's home and another user's, a state directory, and a record path."""
    homes, state = tmp_path / "home", tmp_path / "state"
    for path in (homes / "dummy", homes / "alice", state / "models", state / "model-bundle"):
        path.mkdir(parents=True)
    return {"homes": homes, "state": state, "record": str(state / "state.json"), "root": tmp_path}


def plan(host, account, recorded, action="reset", others=None):
    """(paths, refusals) of the deletion plan; the paths kept for other accounts are checked apart."""
    paths, refusals, kept = deletion_plan(
        "dummy",
        action,
        account,
        recorded,
        (str(host["homes"]),),
        host["record"],
        str(host["state"] / "dummy.password"),
        accounts=[],
        others=others,
    )
    assert others or kept == {}
    return paths, refusals


def test_the_plan_lists_what_the_record_names_inside_the_allow_list(host):
    webui = host["root"] / "srv" / "webui"
    webui.mkdir(parents=True)
    cloned_as_the_dummy(webui)
    recorded = {
        "uid": 1001,
        "created_by_toolkit": True,
        "home": str(host["homes"] / "dummy"),
        "components": {"webui": {"path": str(webui)}},
        "created_paths": [str(webui), str(host["state"] / "models")],
    }
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    # A password file an earlier version kept goes with the account whose password it held, on reset too:
    # the recreated account gets a new password, kept nowhere (issue 12).
    old_password = str(host["state"] / "dummy.password")
    with open(old_password, "w") as handle:
        handle.write("secret\n")
    for action in ("reset", "remove"):
        paths, refusals = plan(host, account, recorded, action=action)
        assert refusals == [] and paths == [str(webui), str(host["state"] / "models"), old_password]
    os.unlink(old_password)
    paths, refusals = plan(host, account, recorded)
    assert refusals == [] and paths == [str(webui), str(host["state"] / "models")]


def test_remove_takes_the_accounts_uv_cache_along_and_reset_keeps_it(host):
    cache, elsewhere = host["state"] / "uv-cache" / "dummy", host["root"] / "caches" / "uv"
    for path in (cache, elsewhere):
        path.mkdir(parents=True)
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    recorded = {
        "uid": 1001,
        "created_by_toolkit": True,
        "home": account["home"],
        "components": {"webui": {"uv": {"binary": "/x/uv", "cache": str(cache)}}},
    }
    assert plan(host, account, recorded) == ([], [])
    paths, refusals = plan(host, account, recorded, action="remove")
    assert refusals == [] and str(cache) in paths
    # A cache the settings put elsewhere is the user's: never deleted, and no reason to refuse the removal.
    recorded["components"]["webui"]["uv"]["cache"] = str(elsewhere)
    paths, refusals = plan(host, account, recorded, action="remove")
    assert refusals == [] and str(elsewhere) not in paths


def test_remove_takes_the_state_directorys_uv_cache_even_when_the_record_does_not_name_it(host):
    # A provision stopped before the WebUI's record step made the cache (owned by the dummy) but never named
    # it: remove-dummy takes it along all the same, reset keeps it warm for the recreated account.
    cache = host["state"] / "uv-cache" / "dummy"
    cache.mkdir(parents=True)
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    assert plan(host, account, RECORDED) == ([], [])
    assert plan(host, account, RECORDED, action="remove") == ([str(cache)], [])


def test_what_another_account_in_the_record_still_uses_stays(host):
    models, webui = host["state"] / "models", host["root"] / "srv" / "webui"
    (webui / "models").mkdir(parents=True)
    (host["state"] / "uv-cache" / "dummy").mkdir(parents=True)
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    recorded = {
        "uid": 1001,
        "created_by_toolkit": True,
        "home": account["home"],
        "components": {"webui": {"path": str(webui)}, "models": {"state_dir": str(models)}},
        "created_paths": [str(models), str(webui / "models")],
    }
    others = {
        "sdt-other": {"uid": 1002, "created_by_toolkit": True, "created_paths": [str(models)]},
        "sdt-third": {"uid": 1003, "components": {"webui": {"path": str(webui)}}},
    }
    paths, refusals, kept = deletion_plan(
        "dummy",
        "remove",
        account,
        recorded,
        (str(host["homes"]),),
        host["record"],
        accounts=[],
        others=others,
    )
    assert refusals == [] and paths == [str(host["state"] / "uv-cache" / "dummy")]
    assert kept == {str(models): "sdt-other", str(webui / "models"): "sdt-third"}
    # With nobody else in the record, they go.
    assert plan(host, account, recorded, action="remove")[0] == [
        str(models), str(webui / "models"), str(host["state"] / "uv-cache" / "dummy")
    ]  # fmt: skip


def test_the_plan_refuses_every_path_outside_the_allow_list_at_once(host):
    recorded = {
        "uid": 1001,
        "created_by_toolkit": True,
        "home": str(host["homes"] / "dummy"),
        "created_paths": [
            "/etc/ssh",
            str(host["homes"] / "alice"),
            str(host["state"] / "model-bundle"),
            str(host["state"] / "models"),
        ],
    }
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    _, refusals = plan(host, account, recorded)
    assert len(refusals) == 3, refusals
    assert refusals[0].startswith(
        "Refusing to delete /etc/ssh (the provision record lists it for dummy): it is"
    )
    assert all("outside what reset-dummy may delete" in r for r in refusals)
    assert all(r.endswith(".") and r.count(". ") == 0 for r in refusals), "one sentence each"


def test_the_plan_refuses_a_home_that_is_not_where_homes_live(host):
    elsewhere = host["root"] / "srv" / "dummy"
    elsewhere.mkdir(parents=True)
    account = {"name": "dummy", "uid": 1001, "home": str(elsewhere)}
    _, refusals = plan(host, account, RECORDED)
    assert refusals == [
        f"Refusing to reset dummy: dummy's home {elsewhere} is not {host['homes'] / 'dummy'}, the only place"
        " reset-dummy deletes a home; delete it by hand if you mean it."
    ]


def test_the_plan_refuses_a_home_that_is_a_symbolic_link(host):
    (host["homes"] / "dummy").rmdir()
    (host["homes"] / "dummy").symlink_to(host["homes"] / "alice")
    account = {"name": "dummy", "uid": 1001, "home": str(host["homes"] / "dummy")}
    _, refusals = plan(host, account, RECORDED)
    assert len(refusals) == 1 and "is a symbolic link" in refusals[0]


def test_a_home_left_by_a_deletion_killed_half_way_goes_with_the_leftovers(host):
    recorded = {"uid": 1001, "created_by_toolkit": True, "home": str(host["homes"] / "dummy")}
    paths, refusals = plan(host, None, recorded)
    assert refusals == [] and paths == [str(host["homes"] / "dummy")]
    # A record whose home is somebody else's is refused, not followed.
    recorded["home"] = str(host["homes"] / "alice")
    _, refusals = plan(host, None, recorded)
    assert len(refusals) == 1 and str(host["homes"] / "alice") in refusals[0]


def test_an_adopted_account_keeps_its_home_unless_forced():
    adopted = {"uid": 1001, "created_by_toolkit": False, "adopted": True}
    account = {"uid": 1001, "home": "/home/dummy"}
    for action in ("reset", "remove"):
        sentence = refusal(account=account, recorded=adopted, action=action)
        assert sentence.startswith(
            f"Refusing to {action} dummy: it existed before this toolkit and was adopted"
        )
        assert "would delete its home /home/dummy with its owner's files; run with FORCE=yes" in sentence
        assert refusal(account=account, recorded=adopted, action=action, force=True) is None


def comfyui_record(host, comfyui, created=True):
    return {
        "uid": DUMMY_UID,
        "created_by_toolkit": True,
        "home": str(host["homes"] / "dummy"),
        "components": {"comfyui": {"path": str(comfyui)}},
        "created_paths": [str(comfyui)] if created else [],
    }


DUMMY = {"name": "dummy", "uid": DUMMY_UID}


def test_comfyuis_tree_outside_the_home_goes_when_the_toolkit_cloned_it_there(host):
    comfyui = host["root"] / "srv" / "ComfyUI"
    (comfyui / "output").mkdir(parents=True)
    cloned_as_the_dummy(comfyui)
    account = {**DUMMY, "home": str(host["homes"] / "dummy")}
    for action in ("reset", "remove"):
        assert plan(host, account, comfyui_record(host, comfyui), action=action) == ([str(comfyui)], [])
    # The account already gone (a deletion killed half-way): judged by the uid the record has.
    assert plan(host, None, comfyui_record(host, comfyui))[1] == []
    # A tree that was there before the toolkit is not in created_paths: named by the record, never deleted.
    assert plan(host, account, comfyui_record(host, comfyui, created=False)) == ([], [])


@pytest.mark.parametrize("where", ["/usr", "/", "/etc/sdt-comfyui", "alice's home"])
def test_a_recorded_comfyui_tree_in_a_system_place_is_refused_in_one_sentence(host, where):
    comfyui = str(host["homes"] / "alice" / "ComfyUI") if where == "alice's home" else where
    account = {**DUMMY, "home": str(host["homes"] / "dummy")}
    accounts = [{"name": "alice", "uid": 1000, "home": str(host["homes"] / "alice")}]
    paths, refusals, _ = deletion_plan(
        "dummy", "reset", account, comfyui_record(host, comfyui), (str(host["homes"]),), host["record"],
        accounts=accounts,
    )  # fmt: skip
    assert paths == [comfyui] and len(refusals) == 1, refusals
    assert refusals[0].startswith(f"Refusing to delete {comfyui} (the provision record lists it for dummy): ")
    assert refusals[0].endswith(".") and refusals[0].count(". ") == 0, "one sentence"
    if where in ("/usr", "/"):
        assert "it is a system directory, which the toolkit never deletes" in refusals[0]
    else:
        assert f"the ComfyUI tree {comfyui} the record names cannot be deleted" in refusals[0]


def test_a_recorded_comfyui_tree_that_is_a_link_or_not_the_dummys_is_refused(host):
    """The toolkit clones ComfyUI as the dummy: a link at its place (the dummy could have made it, to any
    directory) or a directory another account owns (root's) is not the toolkit's tree."""
    account = {**DUMMY, "home": str(host["homes"] / "dummy")}
    target = host["root"] / "srv" / "important"
    target.mkdir(parents=True)
    link = host["root"] / "srv" / "ComfyUI"
    link.symlink_to(target)
    _, refusals = plan(host, account, comfyui_record(host, link))
    assert refusals == [
        f"Refusing to delete {link} (the provision record lists it for dummy): the ComfyUI tree is a symbolic"
        f" link (to {target}), not the directory the toolkit cloned, and root follows no link the dummy could"
        " have made."
    ]
    # Owned by whoever runs the tests (root in CI), not by the dummy's uid.
    _, refusals = plan(host, account, comfyui_record(host, target))
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert refusals == [
        f"Refusing to delete {target} (the provision record lists it for dummy): the ComfyUI tree is owned by"
        f" {me} (uid {os.geteuid()}), not by dummy, as whom the toolkit clones it, so it is not the toolkit's."
    ]
    assert target.is_dir()
    # A file where the tree should be.
    link.unlink()
    link.write_text("not a tree")
    _, refusals = plan(host, account, comfyui_record(host, link))
    assert refusals and "the ComfyUI tree is not a directory" in refusals[0]


def test_the_app_tree_check_reads_the_owner_without_following_a_link():
    from reset_guard import app_tree_refusal

    def lstat(mode, uid):
        return lambda path: os.stat_result((mode, 0, 0, 1, uid, uid, 0, 0, 0, 0))

    def missing(path):
        raise FileNotFoundError(path)

    assert (
        app_tree_refusal("/srv/ComfyUI", "ComfyUI tree", "dummy", 1001, lstat(stat.S_IFDIR | 0o755, 1001))
        is None
    )
    assert app_tree_refusal("/srv/ComfyUI", "ComfyUI tree", "dummy", 1001, missing) is None
    root_owned = app_tree_refusal("/srv/ComfyUI", "ComfyUI tree", "dummy", 1001, lstat(stat.S_IFDIR | 0o755, 0),
                                  owner_name=lambda uid: "root")  # fmt: skip
    assert root_owned.startswith("the ComfyUI tree is owned by root (uid 0), not by dummy")
    # No uid to compare with (a record without one, the account gone): refused, not guessed.
    assert "owned by" in app_tree_refusal("/srv/C", "ComfyUI tree", "dummy", None, lstat(stat.S_IFDIR, 1001),
                                          owner_name=str)  # fmt: skip
    link = app_tree_refusal("/srv/C", "WebUI tree", "dummy", 1001, lstat(stat.S_IFLNK | 0o777, 1001),
                            readlink=lambda path: "/etc")  # fmt: skip
    assert link.startswith("the WebUI tree is a symbolic link (to /etc)")
