"""The dummy account's whole lifecycle through the real make targets, on this machine (root).

Destructive tests prove that nothing outside what they made was touched: the account database, /home and
the state directory are listed before and after, and compared with what the test itself created and expects
gone (other helpers' throwaway `sdt...` accounts come and go meanwhile, so they are left out of the listing).
"""

import contextlib
import json
import os
import pwd
import secrets
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from model_fixtures import random_safetensors
from sdenv_testlib import remove_user, user_exists

# The account's lifecycle on its own: the later roles (packages, WebUI, models) have their own tests.
ONLY_THE_ACCOUNT = "--tags dummy_user"


def account(name):
    entry = pwd.getpwnam(name)
    groups = subprocess.run(["id", "-Gn", name], capture_output=True, text=True, check=True).stdout.split()
    return {"uid": entry.pw_uid, "home": entry.pw_dir, "shell": entry.pw_shell, "groups": groups}


def record(inventory):
    with open(inventory.state_dir / "state.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def provisioned(test_inventory, make_target):
    """A dummy account made by `make provision`, with a marker file in its home."""
    inventory = test_inventory()
    result = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert result.returncode == 0, result
    marker = os.path.join(account(inventory.user)["home"], "old-home-marker")
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write("from before the reset\n")
    return inventory, marker


def test_provision_creates_an_admin_account_and_is_idempotent(provisioned, make_target):
    inventory, _ = provisioned
    user = account(inventory.user)
    assert "sudo" in user["groups"]
    assert user["shell"] == "/bin/zsh"
    assert os.stat(user["home"]).st_uid == user["uid"]

    entry = record(inventory)["users"][inventory.user]
    assert entry["uid"] == user["uid"] and entry["created_by_toolkit"] is True
    shadow = subprocess.run(["getent", "shadow", inventory.user], capture_output=True, text=True).stdout
    assert shadow.split(":")[1].startswith("$"), "the generated password was not set"
    assert not (inventory.state_dir / f"{inventory.user}.password").exists()  # kept nowhere (issue 12)

    again = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert again.returncode == 0, again
    assert again.recap["changed"] == 0, again

    dry = make_target("provision", inventory, CHECK=1, ARGS=ONLY_THE_ACCOUNT)
    assert dry.returncode == 0 and dry.recap["changed"] == 0, dry


def test_reset_dummy_recreates_a_clean_account(provisioned, make_target):
    inventory, marker = provisioned
    before = record(inventory)["users"][inventory.user]
    time.sleep(1.1)  # created_at has one-second resolution; the new entry must be told apart
    result = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert result.returncode == 0, result
    assert user_exists(inventory.user)
    assert not os.path.exists(marker), "the old home survived the reset"
    user = account(inventory.user)
    assert os.stat(user["home"]).st_uid == user["uid"] and "sudo" in user["groups"]
    after = record(inventory)["users"][inventory.user]
    assert after["created_by_toolkit"] is True and after["created_at"] != before["created_at"]

    again = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
    assert again.returncode == 0 and again.recap["changed"] == 0, again


def host_listing(*roots, user):
    """What a destructive test must leave alone: every path under `roots` (mode, owner, size, mtime; no
    contents), and the account and group databases, without other tests' throwaway accounts but with ours."""

    def mine_or_not_throwaway(name):
        return name == user or not name.startswith("sdt")

    listing = {}
    for root in roots:
        for directory, dirnames, filenames in os.walk(root):
            if directory == "/home":
                dirnames[:] = [d for d in dirnames if mine_or_not_throwaway(d)]
            for name in dirnames + filenames:
                path = os.path.join(directory, name)
                info = os.lstat(path)
                listing[path] = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_size, info.st_mtime_ns)
    for database in ("/etc/passwd", "/etc/group", "/etc/shadow"):
        with open(database, encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if not mine_or_not_throwaway(fields[0]):
                    continue
                if database == "/etc/group":  # members: throwaway accounts join and leave sudo meanwhile
                    fields[3] = ",".join(m for m in fields[3].split(",") if m and not m.startswith("sdt"))
                listing[f"{database}:{fields[0]}"] = ":".join(fields)
    return listing


def changes(before, after):
    return {
        "gone": sorted(set(before) - set(after)),
        "new": sorted(set(after) - set(before)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }


def under(paths, *roots):
    return [p for p in paths if any(p == r or p.startswith(f"{r}/") or p.startswith(f"{r}:") for r in roots)]


def test_reset_removes_what_the_record_lists_and_keeps_what_the_host_shares(
    provisioned, make_target, tmp_path
):
    inventory, _ = provisioned
    # A WebUI tree and a ComfyUI tree the toolkit cloned outside the home (as the dummy, so they are its),
    # and the models' state there: all recorded.
    webui = tmp_path / "srv" / "stable-diffusion-webui"
    (webui / "models").mkdir(parents=True)
    comfyui = tmp_path / "srv" / "ComfyUI"
    (comfyui / "output").mkdir(parents=True)
    for tree in (webui, comfyui):
        os.chown(tree, account(inventory.user)["uid"], -1)
    models_state = inventory.state_dir / "models"
    models_state.mkdir(mode=0o700)
    (models_state / "stat-cache.json").write_text("{}")
    state = record(inventory)
    entry = state["users"][inventory.user]
    entry["components"]["webui"] = {"path": str(webui)}
    entry["components"]["comfyui"] = {"path": str(comfyui)}
    entry["created_paths"] = [str(webui), str(comfyui), str(models_state)]
    state["shared"] = {"packages_installed_by_toolkit": ["sdt-package-a", "sdt-package-b"]}
    (inventory.state_dir / "state.json").write_text(json.dumps(state))
    bundle = inventory.state_dir / "model-bundle"  # kept across resets on purpose
    bundle.mkdir()
    (bundle / "keep.safetensors").write_bytes(b"keep")
    bystander = tmp_path / "srv" / "not-recorded"
    bystander.mkdir()
    old_password = inventory.state_dir / f"{inventory.user}.password"  # as earlier versions kept it
    old_password.write_text("written-by-an-earlier-version\n")

    result = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert result.returncode == 0, result
    assert not webui.exists() and not comfyui.exists() and not models_state.exists()
    assert (bundle / "keep.safetensors").exists() and bystander.exists()
    assert not old_password.exists(), "a password kept in plain text goes with the account it belonged to"
    after = record(inventory)
    assert after["users"][inventory.user]["created_paths"] == []
    assert after["shared"] == {"packages_installed_by_toolkit": ["sdt-package-a", "sdt-package-b"]}
    assert "the record keeps which ones the toolkit added: sdt-package-a sdt-package-b" in " ".join(
        result.output.split()
    )


def test_a_record_naming_anything_outside_the_allow_list_is_refused_and_nothing_changes(
    provisioned, make_target, tmp_path
):
    inventory, marker = provisioned
    outside = tmp_path / "made-by-someone-else"
    (outside / "bin").mkdir(parents=True)
    # A ComfyUI tree the record names where it may be (outside the home), but root's: not the toolkit's clone.
    roots_comfyui = tmp_path / "srv" / "ComfyUI"
    (roots_comfyui / "custom_nodes").mkdir(parents=True)
    models_state = inventory.state_dir / "models"
    models_state.mkdir()
    state = record(inventory)
    # One path that may go, two that may not: one refused stops the whole deletion.
    state["users"][inventory.user]["components"]["comfyui"] = {"path": str(roots_comfyui)}
    state["users"][inventory.user]["created_paths"] = [str(models_state), str(outside), str(roots_comfyui)]
    (inventory.state_dir / "state.json").write_text(json.dumps(state))
    saved = (inventory.state_dir / "state.json").read_bytes()
    uid = account(inventory.user)["uid"]
    before = host_listing(str(tmp_path), "/home", user=inventory.user)

    for force in ("no", "yes"):
        result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE=force)
        assert result.returncode != 0, result
        words = " ".join(result.output.split())
        assert (
            f"Refusing to delete {outside} (the provision record lists it for {inventory.user}): it is outside"
            " what reset-dummy may delete" in words
        ), result
        assert (
            f"Refusing to delete {roots_comfyui} (the provision record lists it for {inventory.user}): the ComfyUI"
            f" tree is owned by root (uid 0), not by {inventory.user}, as whom the toolkit clones it, so it is"
            " not the toolkit's." in words
        ), result
        assert (roots_comfyui / "custom_nodes").is_dir()
        assert "Nothing was changed" in words
        assert account(inventory.user)["uid"] == uid and os.path.exists(marker)
        assert (inventory.state_dir / "state.json").read_bytes() == saved
        assert changes(before, host_listing(str(tmp_path), "/home", user=inventory.user)) == {
            "gone": [],
            "new": [],
            "changed": [],
        }


def test_remove_dummy_goes_back_to_zero_and_touches_nothing_else(provisioned, make_target, tmp_path):
    inventory, _ = provisioned
    user, state_dir = inventory.user, inventory.state_dir
    home = account(user)["home"]
    models_state = state_dir / "models"
    models_state.mkdir(mode=0o700)
    (models_state / "stat-cache.json").write_text("{}")
    bundle = state_dir / "model-bundle"
    bundle.mkdir()
    (bundle / "keep.safetensors").write_bytes(b"keep")
    state = record(inventory)
    state["users"][user]["created_paths"] = [str(models_state)]
    state["users"]["sdt-other-entry"] = {"uid": 4242, "created_by_toolkit": True, "created_paths": []}
    state["shared"] = {"packages_installed_by_toolkit": ["sdt-package-a"]}
    (state_dir / "state.json").write_text(json.dumps(state))
    before = host_listing(str(tmp_path), "/home", user=user)

    # The same refusals as reset, in remove's words, changing nothing.
    unconfirmed = make_target("remove-dummy", inventory)
    assert unconfirmed.returncode != 0 and "Not confirmed: nothing was changed" in unconfirmed.output
    caller = make_target("remove-dummy", inventory, CONFIRM="yes", env={"SUDO_USER": user})
    assert caller.returncode != 0, caller
    assert f"Refusing to remove {user}: it is the account running this command" in caller.output
    assert changes(before, host_listing(str(tmp_path), "/home", user=user)) == {
        "gone": [],
        "new": [],
        "changed": [],
    }

    removed = make_target("remove-dummy", inventory, CONFIRM="yes")
    assert removed.returncode == 0, removed
    assert not user_exists(user) and not os.path.exists(home)
    after = record(inventory)
    assert user not in after["users"] and "sdt-other-entry" in after["users"]
    assert after["shared"] == {"packages_installed_by_toolkit": ["sdt-package-a"]}
    assert not json.dumps(after).count(user), "the record still mentions the removed account"
    diff = changes(before, host_listing(str(tmp_path), "/home", user=user))
    # Gone: exactly the account, its group, its home, its password and the recorded models state.
    expected_gone = [home, str(models_state), str(state_dir / f"{user}.password")]
    assert sorted(set(under(diff["gone"], *expected_gone)) | set(under(diff["gone"], "/etc"))) == diff["gone"]
    assert under(diff["gone"], "/etc") == sorted(
        f"{db}:{user}" for db in ("/etc/group", "/etc/passwd", "/etc/shadow")
    ), diff
    assert diff["new"] == []
    # The record was rewritten (and the state directory's entries changed with it); nothing else did.
    assert diff["changed"] == [str(state_dir), str(state_dir / "state.json")], diff
    assert (bundle / "keep.safetensors").read_bytes() == b"keep"
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o755

    again = make_target("remove-dummy", inventory, CONFIRM="yes")
    assert again.returncode == 0 and again.recap["changed"] == 0, again
    assert "and the provision record has nothing for it: nothing to remove" in " ".join(again.output.split())


def test_reset_of_an_account_that_does_not_exist_says_so(test_inventory, make_target):
    inventory = test_inventory()
    for force in ("no", "yes"):
        result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE=force)
        assert result.returncode != 0, result
        words = " ".join(result.output.split())
        assert (
            f"There is no account {inventory.user} on this host and the provision record has nothing for it"
            in words
        )
        assert "nothing to reset: `make provision` creates it" in words
        assert "FORCE" not in words.split("There is no account")[1].split("PLAY RECAP")[0]
    assert not user_exists(inventory.user)
    assert not inventory.state_dir.exists(), "a refused reset created the state directory"


@pytest.mark.parametrize("target", ["snapshot", "rollback"])
def test_snapshot_and_rollback_before_the_account_exists_say_so(
    test_inventory, make_target, tmp_path, target
):
    inventory = test_inventory()
    result = make_target(target, inventory, CONFIRM="yes")
    assert result.returncode != 0, result
    words = " ".join(result.output.split())
    assert f"There is no account {inventory.user} on localhost" in words, result
    assert "run make provision first" in words
    assert "Failed to change ownership" not in words and "Traceback" not in words
    assert not (tmp_path / "snapshots").exists() and not inventory.state_dir.exists()


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_the_state_directory_has_one_mode_whichever_target_creates_it(test_inventory, make_target, tmp_path):
    """pin-models (recommended before the first provision) and provision, each first on a fresh state
    directory, under a umask that would otherwise leave 0700."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "sdtpin.safetensors").write_bytes(random_safetensors(512, seed=3))
    lock_file = tmp_path / "lock.yml"
    lock = {
        "models": [
            {"name": "sdtpin", "kind": "lora", "file": "sdtpin.safetensors", "urls": [], "sha256": None,
             "size": None, "source": "test", "token_env": None},
        ]
    }  # fmt: skip
    lock_file.write_text(yaml.safe_dump({"sdenv_lock": lock}))
    modes = {}
    for target, state_dir in (
        ("pin-models", tmp_path / "first-pin"),
        ("provision", tmp_path / "first-provision"),
    ):
        inventory = test_inventory(
            sdenv_state_dir=str(state_dir),
            sdenv_lock=lock,
            sdenv_models_bundle_dirs=[str(bundle)],
            sdenv_models_lock_file=str(lock_file),
        )
        with umask(0o077):
            result = make_target(target, inventory, ARGS=ONLY_THE_ACCOUNT if target == "provision" else "")
        assert result.returncode == 0, result
        modes[target] = stat.S_IMODE(os.stat(state_dir).st_mode), os.stat(state_dir).st_uid
    assert modes == {"pin-models": (0o755, 0), "provision": (0o755, 0)}, modes
    # Either target afterwards leaves the mode alone (nothing to correct, nothing changed).
    assert Path(tmp_path / "first-pin" / "models").is_dir()


def utmp_console_login(path, user):
    """A glibc x86_64 utmp record saying `user` is logged in on tty1 (USER_PROCESS)."""
    entry = struct.pack(
        "<h2xi32s4s32s256shhi2i4i20x",
        7, os.getpid(), b"tty1", b"1", user.encode(), b"", 0, 0, 0, int(time.time()), 0, 0, 0, 0, 0,
    )  # fmt: skip
    assert len(entry) == 384
    path.write_bytes(entry)
    return path


def assert_refused(result, words, inventory, marker):
    assert result.returncode != 0, result
    assert words in result.output, result
    assert os.path.exists(marker), "a refused reset changed the home"
    assert inventory.user in record(inventory)["users"]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-confirmation", "Not confirmed: nothing was changed"),
        ("invoking-user", "it is the account running this command"),
        ("sudo-user", "it is the account running this command"),
        ("console", "it is logged in at the console"),
    ],
)
def test_reset_refusals_change_nothing(provisioned, make_target, tmp_path, case, words):
    inventory, marker = provisioned
    env, variables = {}, {"CONFIRM": "yes"}
    if case == "no-confirmation":
        variables = {}
    elif case == "invoking-user":
        env = {"USER": inventory.user}
    elif case == "sudo-user":
        env = {"SUDO_USER": inventory.user}
    elif case == "console":
        probe = utmp_console_login(tmp_path / "utmp", inventory.user)
        variables["ARGS"] = f"-e sdenv_console_probe_file={probe}"
    uid = account(inventory.user)["uid"]
    result = make_target("reset-dummy", inventory, env=env, **variables)
    assert_refused(result, words, inventory, marker)
    assert account(inventory.user)["uid"] == uid


# Root and system accounts are refused as the dummy by every target's preflight, before reset's own guard
# (reset_refusal, unit-tested) is reached.
def test_reset_refuses_root(test_inventory, make_target):
    inventory = test_inventory(sdenv_user_name="root")
    result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
    assert result.returncode != 0, result
    assert (
        "sets sdenv_user_name to 'root': expected the name of the dummy account, never root" in result.output
    )
    assert os.path.isdir("/root")


def test_reset_refuses_a_system_account(test_inventory, make_target, throwaway_user):
    subprocess.run(["useradd", "--system", "--no-create-home", throwaway_user], check=True)
    inventory = test_inventory()
    result = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
    assert result.returncode != 0 and f"{throwaway_user} is a system account here (uid" in result.output, (
        result
    )
    assert user_exists(throwaway_user)


def test_an_existing_account_is_taken_over_only_with_adopt(test_inventory, make_target):
    """Someone's account of the dummy's name: provision refuses before any change, saying what it would
    change; ADOPT=yes adopts it (recorded as such); reset then keeps it and its home unless FORCE=yes."""
    inventory = test_inventory()
    subprocess.run(["useradd", "--create-home", "--comment", "Someone Else", inventory.user], check=True)
    try:
        before = account(inventory.user)
        gecos = pwd.getpwnam(inventory.user).pw_gecos
        marker = os.path.join(before["home"], "handmade")
        open(marker, "w").close()
        groups = ",".join(before["groups"])

        refused = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)
        assert refused.returncode != 0, refused
        assert (
            f"The account {inventory.user} already exists (uid {before['uid']}) and the provision record"
            f" {inventory.state_dir}/state.json does not name it, so provisioning would take it over and change"
            f" shell {before['shell']} → /bin/zsh; full name 'Someone Else' → 'Dummy'; groups {groups} →"
            f" {groups},sudo: run with ADOPT=yes to adopt it" in refused.output
        ), refused
        assert account(inventory.user) == before and pwd.getpwnam(inventory.user).pw_gecos == gecos
        assert not inventory.state_dir.exists(), "the preflight refused after a change (the state directory)"

        adopted = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT, ADOPT="yes")
        assert adopted.returncode == 0, adopted
        assert (
            f"{inventory.user} on localhost existed before this toolkit and is now adopted as the dummy (changed"
            f" shell {before['shell']} → /bin/zsh; full name 'Someone Else' → 'Dummy'; groups {groups} →"
            f" {groups},sudo)" in " ".join(adopted.output.split())
        ), adopted
        after = account(inventory.user)
        assert after["uid"] == before["uid"] and after["shell"] == "/bin/zsh" and "sudo" in after["groups"]
        entry = record(inventory)["users"][inventory.user]
        assert entry["adopted"] is True and entry["created_by_toolkit"] is False

        again = make_target("provision", inventory, ARGS=ONLY_THE_ACCOUNT)  # the record names it now
        assert again.returncode == 0 and again.recap["changed"] == 0, again

        refused = make_target("reset-dummy", inventory, CONFIRM="yes")
        assert_refused(
            refused, "it existed before this toolkit and was adopted (ADOPT=yes)", inventory, marker
        )

        forced = make_target("reset-dummy", inventory, CONFIRM="yes", FORCE="yes")
        assert forced.returncode == 0, forced
        assert not os.path.exists(marker)
        assert record(inventory)["users"][inventory.user]["created_by_toolkit"] is True
    finally:
        remove_user(inventory.user)


# --- Issue 19: deletion only where the toolkit may have put things; true zero, shared state stays -------


@pytest.fixture
def throwaway_paths():
    """Paths a test makes outside its own directory (in /etc, /tmp, /var/tmp), removed afterwards."""
    made = []
    yield made
    for path in reversed(made):
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


def test_a_record_naming_a_system_tree_as_the_webui_tree_is_refused_and_nothing_is_deleted(
    provisioned, make_target, throwaway_paths
):
    inventory, marker = provisioned
    # A crafted record: the WebUI tree is a throwaway directory in /etc (main deleted it, FORCE or not).
    system_tree = Path("/etc") / ("sdt" + secrets.token_hex(4))
    throwaway_paths.append(str(system_tree))
    (system_tree / "keep").mkdir(parents=True)
    state = record(inventory)
    entry = state["users"][inventory.user]
    entry.setdefault("components", {})["webui"] = {"path": str(system_tree)}
    entry["created_paths"] = [str(system_tree)]
    (inventory.state_dir / "state.json").write_text(json.dumps(state))
    saved = (inventory.state_dir / "state.json").read_bytes()

    result = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert result.returncode != 0, result
    words = " ".join(result.output.split())
    assert (
        f"Refusing to delete {system_tree} (the provision record lists it for {inventory.user}): it is outside"
        f" what reset-dummy may delete for {inventory.user} (the WebUI tree {system_tree} the record names"
        " cannot be deleted: the preflight expects a path of its own outside /etc, which belongs to the"
        " system)." in words
    ), result
    assert (system_tree / "keep").is_dir() and os.path.exists(marker) and user_exists(inventory.user)
    assert (inventory.state_dir / "state.json").read_bytes() == saved


def test_remove_dummy_keeps_what_others_use_and_takes_its_uv_cache_and_temp_files(
    provisioned, make_target, throwaway_paths
):
    inventory, _ = provisioned
    user, state_dir = inventory.user, inventory.state_dir
    uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
    # As main's webui role left them: <state>/uv-cache made the first dummy's, its own cache in it (not named
    # by a record a provision stopped before writing).
    shared_uv = state_dir / "uv-cache"
    (shared_uv / user / "wheels").mkdir(parents=True)
    (shared_uv / user / "wheels" / "torch.whl").write_bytes(b"w")
    for path in (
        shared_uv,
        shared_uv / user,
        shared_uv / user / "wheels",
        shared_uv / user / "wheels" / "torch.whl",
    ):
        os.chown(path, uid, gid)
    # The models' stat cache, which another account in the record still uses.
    models_state = state_dir / "models"
    models_state.mkdir(mode=0o700)
    (models_state / "stat-cache.json").write_text("{}")
    other = "sdt" + secrets.token_hex(4)
    state = record(inventory)
    state["users"][user]["created_paths"] = [str(models_state)]
    state["users"][other] = {"uid": 4242, "created_by_toolkit": True, "created_paths": [str(models_state)]}
    (state_dir / "state.json").write_text(json.dumps(state))
    # What its processes left in /tmp and /var/tmp, and what is not its own there.
    tag = "sdt" + secrets.token_hex(4)
    torch_tmp, uv_tmp = Path("/tmp") / f"{tag}-torch.pt", Path("/var/tmp") / f"{tag}-uv"
    roots, its_link = Path("/tmp") / f"{tag}-root-only", Path("/tmp") / f"{tag}-link"
    throwaway_paths.extend(str(p) for p in (torch_tmp, uv_tmp, roots, its_link))
    torch_tmp.write_bytes(b"t")
    (uv_tmp / "build").mkdir(parents=True)
    (uv_tmp / "build" / "x.o").write_bytes(b"o")
    roots.write_text("root's\n")
    its_link.symlink_to(roots)
    for path in (torch_tmp, uv_tmp, uv_tmp / "build", uv_tmp / "build" / "x.o", its_link):
        os.lchown(path, uid, gid)

    removed = make_target("remove-dummy", inventory, CONFIRM="yes")
    assert removed.returncode == 0, removed
    words = " ".join(removed.output.split())
    assert not user_exists(user)
    # Kept for the other account, and said so.
    assert (models_state / "stat-cache.json").read_text() == "{}"
    assert f"Kept {models_state}: {other} still uses it" in words, removed
    assert other in record(inventory)["users"]
    # Its uv cache went; the shared parent is root's again.
    assert not (shared_uv / user).exists()
    assert os.stat(shared_uv).st_uid == 0
    # Its temp files went (the link itself, not what it pointed to); root's stayed.
    for path in (torch_tmp, uv_tmp, its_link):
        assert not os.path.lexists(path), path
    assert roots.read_text() == "root's\n"
    assert "Deleted what it owned in /tmp and /var/tmp (" in words, removed
