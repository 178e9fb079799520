"""The webui role for real on this machine: fixture upstream (bare repos over HTTP, a tiny wheelhouse),
a throwaway dummy user, the real make targets."""

import json
import os
import pwd
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import clip_tokenizer_files
import pytest
from fixture_host import free_port, real_lock
from sdenv_testlib import ROOT, ansiballz_payload_dirs, remove_payload_dirs_left_by_a_kill
from venv_index_fixtures import venv_lock_vars
from webui_fixtures import SUBREPOS, build_webui_upstream, launch_records, offline, serve_http

SHIPPED = ROOT / "roles" / "webui" / "files" / "clip-vit-large-patch14"
# The roles the WebUI builds on (python's interpreter, the packages that give it venv) and this one; the
# models and the known-good snapshot are other areas' and would only slow these tests down.
TAGS = "--tags dummy_user,homebrew,python,webui"


@pytest.fixture
def upstream(tmp_path_factory):
    """The fixture upstream under a world-readable directory, served over HTTP for the test."""
    root = Path(f"/tmp/sdt-webui-{os.getpid()}-{time.monotonic_ns()}")
    fixture = build_webui_upstream(root, SHIPPED, clip_tokenizer_files.derived_files)
    try:
        with serve_http(root) as server:
            yield fixture, server
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def webui_inventory(test_inventory, fixture, server, **extra):
    return test_inventory(
        **venv_lock_vars(fixture, server.url, real_lock()), sdenv_webui_port=free_port(), **extra
    )


def python_path(inventory):
    """The interpreter role python chose, as the provision record has it."""
    state = json.loads((inventory.state_dir / "state.json").read_text())
    return state["users"][inventory.user]["components"]["python"]["path"]


def git_head(path):
    return subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def owners(top):
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            found.add(os.lstat(os.path.join(dirpath, name)).st_uid)
    return found


def test_provision_pins_the_webui_and_is_idempotent(test_inventory, make_target, upstream):
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server)
    first = make_target("provision", inventory, ARGS=TAGS)
    assert first.returncode == 0, first

    user = pwd.getpwnam(inventory.user)
    webui = Path(user.pw_dir) / "stable-diffusion-webui"
    lock = inventory.variables["sdenv_lock"]
    assert git_head(webui) == fixture.webui_shas[0]
    for directory, _ in SUBREPOS:
        assert git_head(webui / "repositories" / directory) == fixture.subrepo_shas[directory][0], directory
    assert owners(webui) == {user.pw_uid}, "a file in the WebUI tree does not belong to the dummy"
    assert owners(Path(user.pw_dir) / ".cache") == {user.pw_uid}

    script = (webui / "webui-user.sh").read_text()
    assert f"python_cmd={python_path(inventory)}" in script
    assert f"venv_dir={webui}/venv" in script
    assert "--no-download-sd-model --skip-version-check --api" in script
    assert "--skip-torch-cuda-test --upcast-sampling" not in script, "macOS defaults on Linux"
    for repo in lock["repositories"]:
        assert f"export {repo['env']}_REPO={repo['repo']}" in script
        assert f"export {repo['env']}_COMMIT_HASH={repo['commit']}" in script
    assert "export HF_HUB_OFFLINE=1" in script and "export TRANSFORMERS_OFFLINE=1" in script

    config = json.loads((webui / "config.json").read_text())
    checkpoints = [m["file"] for m in lock.get("models", []) if m.get("kind") == "checkpoint"]
    assert config["sd_model_checkpoint"] == [*checkpoints, "beautifulRealistic_v7.safetensors"][0]
    assert config["auto_launch_browser"] == "Disable"
    ui = json.loads((webui / "ui-config.json").read_text())
    assert ui["customscript/sampler.py/txt2img/Sampling method/value"] == "DPM++ SDE"
    assert ui["customscript/sampler.py/txt2img/Schedule type/value"] == "Karras"
    assert ui["customscript/sampler.py/txt2img/Sampling steps/value"] == 20
    assert (ui["txt2img/Width/value"], ui["txt2img/Height/value"]) == (512, 512)

    # The venv was built by the toolkit, then the WebUI's own preparation ran with --exit, as the dummy.
    records = launch_records(webui)
    assert len(records) == 1 and "--exit" in records[0]["argv"], records
    assert records[0]["uid"] == user.pw_uid and records[0]["network_actions"] == []
    assert records[0]["prefix"] == str(webui / "venv")
    assert records[0]["cwd"] == records[0]["sys_path0"] == str(webui)
    assert records[0]["env"]["HF_HUB_OFFLINE"] == "1"
    assert not (webui / "launch-record.log").exists(), "webui.sh had to create the venv itself"

    snapshot = Path(user.pw_dir) / ".cache/huggingface/hub/models--openai--clip-vit-large-patch14/snapshots"
    for name, digest in fixture.tokenizer_sha256.items():
        assert (
            clip_tokenizer_files.sha256_file(snapshot / lock["clip_tokenizer"]["revision"] / name) == digest
        )

    state = json.loads((inventory.state_dir / "state.json").read_text())
    component = state["users"][inventory.user]["components"]["webui"]
    assert component["path"] == str(webui) and component["commit"] == fixture.webui_shas[0]
    assert (
        component["venv"]["inputs_digest"]
        == json.loads((webui / "venv/.sdenv-venv.json").read_text())["digest"]
    )

    # Second run: nothing changes, no git object is fetched, pip never runs - the remotes answer 503 and
    # the wheelhouse is moved away, so any fetch, clone or install would fail the run.
    marker = (webui / "venv/.sdenv-venv.json").stat()
    moved = fixture.wheelhouse.with_name("wheelhouse.away")
    fixture.wheelhouse.rename(moved)
    try:
        with offline(server):
            before = len(server.requests)
            again = make_target("provision", inventory, ARGS=TAGS)
            requests = server.requests[before:]
    finally:
        moved.rename(fixture.wheelhouse)
    assert again.returncode == 0, again
    assert again.recap["changed"] == 0, again
    assert requests == [], f"the second provision talked to the upstream: {requests}"
    assert len(launch_records(webui)) == 1, "the second provision ran the WebUI's preparation again"
    assert (webui / "venv/.sdenv-venv.json").stat().st_mtime_ns == marker.st_mtime_ns

    dry = make_target("provision", inventory, ARGS=TAGS, CHECK=1)
    assert dry.returncode == 0 and dry.recap["changed"] == 0, dry


def test_user_settings_survive_and_local_changes_are_refused(test_inventory, make_target, upstream):
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server, sdenv_webui_venv_bootstrap=False)
    before = len(server.requests)  # resolving the fixture's venv locks read its index and git
    dry = make_target("provision", inventory, ARGS=TAGS, CHECK=1)
    assert dry.returncode == 0, dry
    # The dry run's preflight proves each repository answers (issue 20: reachability before change), and
    # fetches nothing: on this dumb-HTTP fixture, only ref listings (info/refs and HEAD), never an object.
    probes = server.requests[before:]
    assert probes and all(p.endswith(("/info/refs?service=git-upload-pack", ".git/HEAD")) for p in probes), (
        f"a dry run before the first provision fetched from the upstream: {probes}"
    )
    assert make_target("provision", inventory, ARGS=TAGS).returncode == 0
    webui = Path(pwd.getpwnam(inventory.user).pw_dir) / "stable-diffusion-webui"

    # A key of the user's survives; a guide default the user changed is set back.
    config = json.loads((webui / "config.json").read_text())
    config.update({"sdenv_test_user_key": "kept", "auto_launch_browser": "Local"})
    (webui / "config.json").write_text(json.dumps(config))
    result = make_target("provision", inventory, ARGS=TAGS)
    assert result.returncode == 0, result
    config = json.loads((webui / "config.json").read_text())
    assert config["sdenv_test_user_key"] == "kept" and config["auto_launch_browser"] == "Disable"

    # A tracked file with local changes stops the run with one sentence naming it, and is left alone.
    launch = webui / "launch.py"
    edited = launch.read_text() + "# the user's local change\n"
    launch.write_text(edited)
    refused = make_target("provision", inventory, ARGS=TAGS)
    assert refused.returncode != 0, refused
    assert "has local changes to launch.py" in refused.output and "FORCE=yes" in refused.output, refused
    assert launch.read_text() == edited

    forced = make_target("provision", inventory, ARGS=TAGS, FORCE="yes")
    assert forced.returncode == 0, forced
    assert "# the user's local change" not in launch.read_text()
    assert git_head(webui) == fixture.webui_shas[0]
    status = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(webui), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert status.split() in ([], ["M", "webui-user.sh"]), status


def wait_for(predicate, what, seconds=300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_killed_venv_bootstrap_converges_next_run(test_inventory, make_target, upstream):
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server)
    fixture.hold_clip_build.write_text("hold")
    argv = [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "provision",
        f"INVENTORY={inventory}",
        f"ARGS={TAGS}",
    ]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    payloads_before = ansiballz_payload_dirs("webui_venv")
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            wait_for(fixture.clip_build_started.exists, "the venv bootstrap to reach the CLIP build")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["pkill", "-KILL", "-u", inventory.user], check=False)
            fixture.hold_clip_build.unlink()
            remove_payload_dirs_left_by_a_kill(
                "webui_venv", payloads_before
            )  # only this test runs it meanwhile
    webui = Path(pwd.getpwnam(inventory.user).pw_dir) / "stable-diffusion-webui"
    assert (webui / "venv").is_dir() and not (webui / "venv/.sdenv-venv.json").exists()

    result = make_target("provision", inventory, ARGS=TAGS)
    assert result.returncode == 0, result
    assert "no completed bootstrap recorded" in result.output or "changed" in result.output
    marker = json.loads((webui / "venv/.sdenv-venv.json").read_text())
    assert marker["inputs"]["interpreter"] == os.path.realpath(python_path(inventory))
    records = launch_records(webui)
    assert [r["network_actions"] for r in records] == [[]] and "--exit" in records[0]["argv"], records
    check = subprocess.run(
        [str(webui / "venv/bin/python"), "-c", "import clip, open_clip, torch, sdt_tinyreq_a"], check=False
    )
    assert check.returncode == 0


def test_make_run_starts_the_webui_as_the_dummy_and_ctrl_c_stops_it(test_inventory, make_target, upstream):
    fixture, server = upstream
    inventory = webui_inventory(test_inventory, fixture, server)
    assert make_target("provision", inventory, ARGS=TAGS).returncode == 0
    user = pwd.getpwnam(inventory.user)
    webui = Path(user.pw_dir) / "stable-diffusion-webui"
    url = f"http://127.0.0.1:{inventory.variables['sdenv_webui_port']}/"

    argv = ["make", "--no-print-directory", "-C", str(ROOT), "run", f"INVENTORY={inventory}"]
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            for line in proc.stdout:
                lines.append(line)
                if "the WebUI is running at" in line or "sdenv: the WebUI exited" in line:
                    break
            assert f"the WebUI is running at {url}" in "".join(lines), "".join(lines[-40:])
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
            record = [r for r in launch_records(webui) if "--exit" not in r["argv"] and "event" not in r][-1]
            assert record["uid"] == user.pw_uid != 0 and record["mode"] == "webui"
            assert record["host"] == "127.0.0.1", record  # UI mode: gradio's loopback default
            assert record["cwd"] == record["sys_path0"] == str(webui) and record["network_actions"] == []
            for pid in (record["pid"], record["child_pid"]):
                assert os.stat(f"/proc/{pid}").st_uid == user.pw_uid, "a WebUI process is not the dummy's"
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
            rest, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    # make itself got the SIGINT too and exits by it, as after any Ctrl-C; the launcher stopped cleanly.
    assert proc.returncode in (0, -signal.SIGINT), rest
    assert "sdenv: stopped." in rest, rest
    for pid in (record["pid"], record["child_pid"]):
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived Ctrl-C"
    # ... and the WebUI shut down by itself (it recorded its end), it was not killed mid-way.
    assert any(r.get("event") == "stopped" and r["pid"] == record["pid"] for r in launch_records(webui))
