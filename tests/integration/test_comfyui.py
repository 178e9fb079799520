"""Role comfyui for real on this machine: one throwaway dummy provisioned once with sdenv_apps [webui,
comfyui] from fixture upstreams (the WebUI's and ComfyUI's bare repos, the wheel index, the venv locks that
`make lock-venv`'s own code resolved from it), shared by the tests of this file, which only read it or add
what they remove again. ComfyUI is tests/fixtures/comfyui_tree: as strict as the pinned v0.3.64 about flags,
yaml keys, folder names and the prompt's node classes and inputs."""

import hashlib
import json
import os
import pwd
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import clip_tokenizer_files
import pytest
import yaml
from comfyui_fixtures import add_comfyui_upstream, git_head
from fixture_host import account_vars, free_port, real_lock, write_inventory
from model_fixtures import random_safetensors
from sdenv_testlib import ROOT, TestInventory, remove_user, run_make, user_exists
from venv_index_fixtures import venv_lock_vars
from webui_fixtures import build_webui_upstream, serve_http

sys.path.insert(0, str(ROOT / "tests" / "verify"))
import comfyui_client

SHIPPED = ROOT / "roles" / "webui" / "files" / "clip-vit-large-patch14"
TAGS = "--tags dummy_user,homebrew,python,webui,comfyui"
# A re-run of role comfyui alone (role python sets the interpreter fact it builds the venv with).
AGAIN = "--tags python,comfyui"
USERS_SECTION = (
    "# my own models\nmine:\n    base_path: /srv/elsewhere\n    checkpoints: |\n        a\n        b\n"
)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """(inventory, fixture, comfyui dir, store) after one make provision with both apps."""
    if os.geteuid() != 0:
        pytest.skip("integration tests create users: run them as root")
    root = Path(f"/tmp/sdt-comfyui-{os.getpid()}-{time.monotonic_ns()}")
    user = "sdt" + secrets.token_hex(4)
    assert not user_exists(user)
    work = tmp_path_factory.mktemp("comfyui")
    fixture = build_webui_upstream(root, SHIPPED, clip_tokenizer_files.derived_files)
    add_comfyui_upstream(fixture)
    try:
        with serve_http(root) as server:
            variables = {
                **account_vars(user, work),
                **venv_lock_vars(fixture, server.url, real_lock()),
                "sdenv_apps": ["webui", "comfyui"],
                "sdenv_webui_port": free_port(),
                "sdenv_comfyui_port": free_port(),
            }
            path = write_inventory(work / "inventory", variables)
            inventory = TestInventory(path, user, Path(variables["sdenv_state_dir"]), variables)
            home = Path(f"/home/{user}")
            first = run_make("provision", inventory, ARGS=TAGS)
            assert first.returncode == 0, first
            yield inventory, fixture, home / "ComfyUI", home / "sd-models", first
    finally:
        remove_user(user)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def as_dummy(inventory, argv, **kwargs):
    return subprocess.run(["runuser", "-u", inventory.user, "--", *argv], check=False, **kwargs)


def put_models(inventory, store):
    """The store's layout (ComfyUI's own folder names), filled as the dummy: what role models puts there."""
    for kind, name in (("checkpoints", "guide.safetensors"), ("loras", "glasses-2.safetensors")):
        target = store / kind / name
        as_dummy(inventory, ["mkdir", "-p", str(target.parent)])
        as_dummy(inventory, ["tee", str(target)], input=random_safetensors(64), stdout=subprocess.DEVNULL)


def test_provision_clones_the_pin_builds_the_locked_venv_and_points_the_yaml_at_the_store(provisioned):
    inventory, fixture, comfyui, store, first = provisioned
    dummy = pwd.getpwnam(inventory.user)
    assert git_head(comfyui) == fixture.comfyui.shas[0]
    assert {os.lstat(p).st_uid for p in [comfyui, *comfyui.rglob("*")]} == {dummy.pw_uid}
    assert json.loads((comfyui / "venv" / ".sdenv-venv.json").read_text())["inputs"]["lock_sha256"]
    locked = {line.split("==")[0] for line in Path(marker_lock(inventory)).read_text().splitlines()
              if "==" in line and not line.startswith((" ", "#"))}  # fmt: skip
    assert {"torch", "torchsde", "torchaudio", "comfyui-frontend-package", "pyyaml", "pip"} <= locked
    check = subprocess.run(
        [str(comfyui / "venv/bin/python"), "-m", "pip", "check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    section = comfyui_client_section(comfyui)
    assert section == {"base_path": str(store), "checkpoints": "checkpoints", "loras": "loras"}
    record = json.loads((inventory.state_dir / "state.json").read_text())["users"][inventory.user][
        "components"
    ]
    assert (
        record["comfyui"]["commit"] == fixture.comfyui.shas[0] and record["comfyui"]["venv"]["inputs_digest"]
    )
    assert "ComfyUI tree" in first.output


def marker_lock(inventory):
    record = json.loads((inventory.state_dir / "state.json").read_text())["users"][inventory.user][
        "components"
    ]
    return record["comfyui"]["venv"]["lock"]


def comfyui_client_section(comfyui):
    import comfyui_model_paths

    return comfyui_model_paths.read_section((comfyui / "extra_model_paths.yaml").read_text())


def test_a_second_run_changes_nothing_and_keeps_the_users_yaml_byte_for_byte(provisioned):
    inventory, _, comfyui, _, _ = provisioned
    yaml_file = comfyui / "extra_model_paths.yaml"
    before = yaml_file.read_text()
    as_dummy(
        inventory, ["tee", str(yaml_file)], input=USERS_SECTION + before, text=True, stdout=subprocess.DEVNULL
    )
    # The role's own re-run (the WebUI's idempotence is test_webui_provision's): nothing changes.
    again = run_make("provision", inventory, ARGS=AGAIN)
    assert again.returncode == 0, again.output[-3000:]
    assert again.recap.get("changed") == 0, again.output[-3000:]
    assert yaml_file.read_text() == USERS_SECTION + before
    # A yaml that does not parse is refused with the file left as it was: tests/unit/test_comfyui_model_paths.py.


def test_verify_offline_generates_through_comfyui_and_names_a_yaml_section_it_did_not_write(provisioned):
    """make verify OFFLINE=1: ComfyUI's rows, and its LIVE rows (started as the dummy inside a network
    namespace with only lo, the lock's checkpoint listed from the store, the guide's workflow, the PNG in the
    report). The toolkit's yaml section carries one key too many, so its row fails while ComfyUI still reads
    the store."""
    inventory, _, comfyui, store, _ = provisioned
    yaml_file = comfyui / "extra_model_paths.yaml"
    before = yaml_file.read_text()
    edited = before.replace(f"base_path: {store}\n", f"base_path: {store}\n    vae: vae\n")
    assert edited != before
    checkpoints = [m["file"] for m in real_lock()["models"] if m.get("kind") == "checkpoint"]
    as_dummy(inventory, ["tee", str(yaml_file)], input=edited, text=True, stdout=subprocess.DEVNULL)
    # The checkpoint in the one store, for ComfyUI (extra_model_paths.yaml) and the WebUI's LIVE rows
    # (--ckpt-dir) alike: random weights under the lock's file names.
    folders = [store / "checkpoints"]
    placed = [folder / name for folder in folders for name in checkpoints]
    as_dummy(inventory, ["mkdir", "-p", *map(str, folders)])
    for path in placed:
        as_dummy(inventory, ["tee", str(path)], input=random_safetensors(64), stdout=subprocess.DEVNULL)
    try:
        result = run_make(
            "verify", inventory, VERIFY_REPORTS=str(Path(str(inventory)).parent / "reports"), OFFLINE="1"
        )
    finally:
        as_dummy(inventory, ["tee", str(yaml_file)], input=before, text=True, stdout=subprocess.DEVNULL)
        as_dummy(inventory, ["rm", "-f", *map(str, placed)])
    match = re.search(r"^Report: (.+)/index\.html$", result.output, re.M)
    assert match, result.output[-3000:]
    report = Path(match.group(1))
    rows = {row["check"]: row for row in json.loads((report / "checks.json").read_text())["checks"]}
    comfy = {name: row for name, row in rows.items() if "ComfyUI" in name}
    passing = [
        "ComfyUI at the pinned commit, clean tree",
        "ComfyUI venv holds exactly its locked set",
        "ComfyUI venv passes pip check",
        "LIVE ComfyUI server starts",
        "LIVE ComfyUI network cut",
        "LIVE ComfyUI txt2img 1woman",
        "LIVE ComfyUI server stops",
    ]
    listed = [name for name in comfy if name.startswith("LIVE ComfyUI lists checkpoint ")]
    assert len(listed) == 1 and listed[0].rsplit(" ", 1)[1] in checkpoints, sorted(comfy)
    for name in [*passing, *listed]:
        assert comfy.get(name, {}).get("result") == "PASS", (name, comfy)
    row = comfy["ComfyUI extra_model_paths.yaml points at the model store"]
    assert row["result"] == "FAIL" and "'vae'" in row["detail"] and str(store) in row["detail"], row
    assert "own network namespace" in comfy["LIVE ComfyUI network cut"]["detail"]
    pngs = list((report / "images").rglob("sdenv-verify*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs), list(
        (report / "images").rglob("*")
    )
    # The macOS workflow's own check of ComfyUI's rows (it runs only on a Mac runner) on this real report: it
    # names the one failing row; with that row passing, it passes.
    yaml_row = "ComfyUI extra_model_paths.yaml points at the model store"
    check = workflow_comfyui_check(report / "checks.json")
    assert check.returncode != 0, check
    assert check.stderr.startswith(f"::error::ComfyUI's verify rows: {{{yaml_row!r}: 'FAIL'}} (all: "), check
    doc = json.loads((report / "checks.json").read_text())
    for row in doc["checks"]:
        row["result"] = "PASS" if row["check"] == yaml_row else row["result"]
    (report / "checks-yaml-passing.json").write_text(json.dumps(doc))
    check = workflow_comfyui_check(report / "checks-yaml-passing.json")
    assert check.returncode == 0 and re.match(r"ComfyUI: \d+ rows passed", check.stdout), check


def workflow_comfyui_check(checks_json):
    """Run the Python that .github/workflows/macos.yml feeds from a heredoc after `make verify OFFLINE=1`."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "macos.yml").read_text())
    step = next(
        s for s in workflow["jobs"]["lifecycle"]["steps"] if s["name"].startswith("make verify OFFLINE=1")
    )
    script = step["run"].split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    return subprocess.run(
        [sys.executable, "-", str(checks_json)], input=script, capture_output=True, text=True, check=False
    )


def test_make_run_app_comfyui_serves_the_store_generates_the_guide_image_and_ctrl_c_stops_it(provisioned):
    inventory, _, comfyui, store, _ = provisioned
    dummy = pwd.getpwnam(inventory.user)
    put_models(inventory, store)
    port = inventory.variables["sdenv_comfyui_port"]
    argv = ["make", "--no-print-directory", "-C", str(ROOT), "run", f"INVENTORY={inventory}", "APP=comfyui"]
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            for line in proc.stdout:
                lines.append(line)
                if "ComfyUI is running at" in line or "ComfyUI exited" in line:
                    break
            assert f"ComfyUI is running at http://127.0.0.1:{port}/" in "".join(lines), "".join(lines[-40:])
            record = [json.loads(x) for x in Path(f"{comfyui}.launch-record.jsonl").read_text().splitlines()][
                -1
            ]
            assert record["argv"][:5] == [
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-auto-launch",
            ]
            assert "--cpu" in record["argv"] and record["uid"] == dummy.pw_uid != 0
            assert record["python"] == str(comfyui / "venv/bin/python")
            client = comfyui_client.ComfyClient(f"http://127.0.0.1:{port}")
            assert client.checkpoints() == ["guide.safetensors"] and client.loras() == [
                "glasses-2.safetensors"
            ]
            image = {"width": 64, "height": 64, "steps": 2, "seed": 1234, "cfg_scale": 7}
            workflow = comfyui_client.guide_workflow(
                "guide.safetensors", "1woman", image, "glasses-2.safetensors"
            )
            entry = client.wait(client.queue(workflow), time.monotonic() + 60)
            [(name, png)] = client.images(entry)
            assert png.startswith(b"\x89PNG") and (comfyui / "output" / name).stat().st_uid == dummy.pw_uid
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/queue", timeout=10) as answer:
                assert answer.status == 200
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
            rest, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "sdenv: stopped." in rest, rest
    assert not os.path.exists(f"/proc/{record['pid']}"), "ComfyUI outlived Ctrl-C"


def test_make_run_refuses_an_unknown_app_before_anything_runs(provisioned):
    inventory = provisioned[0]
    result = run_make("run", inventory, APP="comfy")
    assert result.returncode == 2
    assert (
        "APP=comfy is not an app the toolkit installs: use APP=webui (the default) or APP=comfyui."
        in result.output
    )


def test_rollback_restores_comfyuis_tree_and_keeps_its_output_input_and_user_byte_for_byte(provisioned):
    """ComfyUI's tree is a snapshot root: a rollback brings its tracked files back and leaves the user's
    output/, input/ and user/ as they are. A snapshot from before it was a root (sdenv_apps without comfyui
    gives the old roots) rolls back the rest and leaves ComfyUI's tree alone."""
    import snapshot_store as ss
    from snapshot_fixtures import tree_state

    inventory, _, comfyui, _, _ = provisioned
    old = run_make("snapshot", inventory, LABEL="no-comfyui-root", ARGS='-e \'{"sdenv_apps": ["webui"]}\'')
    assert old.returncode == 0, old.output[-4000:]
    new = run_make("snapshot", inventory, LABEL="with-comfyui")
    assert new.returncode == 0, new
    store = ss.Store(inventory.variables["sdenv_snapshot_store"])
    roots = {s["label"]: {r["path"] for r in store.load_manifest(s["id"])["roots"]} for s in store.list()}
    assert str(comfyui) in roots["with-comfyui"] and str(comfyui) not in roots["no-comfyui-root"], roots
    # ComfyUI's commit and the lock its venv was built from are facts where it is chosen, and only there.
    facts = {s["label"]: store.load_manifest(s["id"])["facts"] for s in store.list()}
    head = git_head(comfyui)
    assert facts["with-comfyui"]["comfyui"]["commit"] == head, facts
    lock_sha256 = hashlib.sha256(Path(marker_lock(inventory)).read_bytes()).hexdigest()
    assert facts["with-comfyui"]["comfyui_venv_lock"] == lock_sha256
    assert "comfyui" not in facts["no-comfyui-root"] and "comfyui_venv_lock" not in facts["no-comfyui-root"]
    tracked = comfyui / "main.py"
    pristine = tracked.read_bytes()
    webui_file = comfyui.parent / "stable-diffusion-webui" / "launch.py"  # tracked, in the WebUI root
    webui_pristine = webui_file.read_bytes()
    mine = {
        comfyui / "output" / "ComfyUI_00042_.png": random_safetensors(32),
        comfyui / "input" / "photo.png": b"\x89PNG mine",
        comfyui / "user" / "default" / "workflows" / "mine.json": b'{"nodes": [], "mine": true}\n',
    }
    for path, data in mine.items():
        as_dummy(inventory, ["mkdir", "-p", str(path.parent)])
        as_dummy(inventory, ["tee", str(path)], input=data, stdout=subprocess.DEVNULL)
    work = {d: tree_state(comfyui / d) for d in ("output", "input", "user")}
    try:
        as_dummy(inventory, ["tee", "-a", str(tracked)], input=b"# broken\n", stdout=subprocess.DEVNULL)
        back = run_make("rollback", inventory, TO="with-comfyui", CONFIRM="yes")
        assert back.returncode == 0, back
        assert tracked.read_bytes() == pristine, "the tracked ComfyUI file was not rolled back"
        assert {d: tree_state(comfyui / d) for d in ("output", "input", "user")} == work
        assert f"{comfyui}/output: 1 file new" in back.output, back.output[-3000:]
        # The old snapshot has no ComfyUI root: the rollback to it leaves ComfyUI's tree as it is now.
        as_dummy(inventory, ["tee", "-a", str(tracked)], input=b"# mine\n", stdout=subprocess.DEVNULL)
        # A WebUI file it does restore, so the rollback changes something and Ansible prints its diff.
        as_dummy(inventory, ["tee", "-a", str(webui_file)], input=b"# drift\n", stdout=subprocess.DEVNULL)
        before = run_make("rollback", inventory, TO="no-comfyui-root", CONFIRM="yes", ARGS="--diff")
        assert before.returncode == 0, before
        assert webui_file.read_bytes() == webui_pristine
        # The fact diff (--diff) names ComfyUI's live commit against a manifest that does not record it.
        assert f"comfyui: {head[:12]} (dirty) -> not recorded" in before.output, before.output[-3000:]
        assert f"comfyui venv lock: {lock_sha256[:12]} -> not recorded" in before.output
        assert tracked.read_bytes() == pristine + b"# mine\n"
        assert {d: tree_state(comfyui / d) for d in ("output", "input", "user")} == work
    finally:
        as_dummy(inventory, ["git", "-C", str(comfyui), "checkout", "--", "main.py"])
        as_dummy(inventory, ["git", "-C", str(webui_file.parent), "checkout", "--", "launch.py"])
        as_dummy(inventory, ["rm", "-f", *map(str, mine)])


def test_a_comfyui_pin_the_mirror_lacks_is_one_sentence_before_the_account_exists(provisioned, tmp_path):
    """The preflight probes ComfyUI's repository as it does the WebUI's: the real pin, which the fixture's
    mirror (served as git's smart file:// transport, which fetches by commit id) does not have, stops
    make provision with one sentence before the first change: no account, no record."""
    inventory, fixture, _, _, _ = provisioned
    user = "sdt" + secrets.token_hex(4)
    assert not user_exists(user)
    lock = json.loads(json.dumps(inventory.variables["sdenv_lock"]))
    mirror = f"file://{fixture.root}/git/ComfyUI.git"
    lock["comfyui"].update(repo=mirror, commit=real_lock()["comfyui"]["commit"])
    variables = {**inventory.variables, **account_vars(user, tmp_path), "sdenv_lock": lock}
    other = TestInventory(
        write_inventory(tmp_path / "inventory", variables), user, tmp_path / "state", variables
    )
    try:
        result = run_make("provision", other, ARGS=TAGS)
        assert result.returncode != 0, result
        text = " ".join(result.output.split())
        assert "1 source this run needs cannot be reached; nothing was changed:" in text, result
        assert (
            f"the ComfyUI repository (sdenv_lock.comfyui.repo) at {mirror} answers but does not serve the pinned"
            f" commit {lock['comfyui']['commit']} (" in text
        ), result
        assert not user_exists(user) and not (tmp_path / "state" / "state.json").exists()
    finally:
        remove_user(user)


def test_check_mode_with_both_apps_changes_nothing_on_a_fresh_account_and_a_provisioned_one(
    provisioned, tmp_path
):
    """make provision CHECK=1 with sdenv_apps [webui, comfyui]: on the provisioned account (DEEP=1) it reports
    nothing to change and leaves the trees as they are; for an account that does not exist yet it passes, says what
    it would do and creates nothing."""
    inventory, _, comfyui, _, _ = provisioned
    head = git_head(comfyui)
    yaml_before = (comfyui / "extra_model_paths.yaml").read_bytes()
    # DEEP=1: role comfyui runs in full (the fast path would skip it here), so its own tasks run in check mode
    # against the provisioned tree; the WebUI's check mode is test_webui_provision's.
    again = run_make("provision", inventory, CHECK="1", DEEP="1", ARGS=AGAIN)
    assert again.returncode == 0, again.output[-4000:]
    assert again.recap.get("changed") == 0, again.output[-4000:]
    for task in ("Build ComfyUI's venv from its hashed lock with uv", "Point ComfyUI at the model store"):
        assert f"TASK [comfyui : {task}" in again.output, (task, again.output[-4000:])  # ran, in check mode
    assert git_head(comfyui) == head and (comfyui / "extra_model_paths.yaml").read_bytes() == yaml_before
    user = "sdt" + secrets.token_hex(4)
    assert not user_exists(user)
    variables = {**inventory.variables, **account_vars(user, tmp_path)}
    fresh = TestInventory(
        write_inventory(tmp_path / "inventory", variables), user, tmp_path / "state", variables
    )
    try:
        dry = run_make("provision", fresh, CHECK="1", ARGS=TAGS)
        assert dry.returncode == 0, dry.output[-4000:]
        assert not user_exists(user) and not Path(f"/home/{user}").exists()
        assert not (tmp_path / "state" / "state.json").exists()
    finally:
        remove_user(user)
