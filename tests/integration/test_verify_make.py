"""make verify for real on this machine: provision the fixture host (tests/fixtures/fixture_host.py: the
webui and models areas' fixture builders, a throwaway dummy), verify passes every check, LIVE/OFFLINE inside
a real network namespace through the fixture WebUI tree (tests/fixtures/webui_tree: webui.sh -> launch.py ->
modules.launch_utils, shaped like upstream's, serving the FAKE API, not the real WebUI), then one thing
broken at a time must fail verify naming that thing; and the whole lifecycle against the fixture host that
`python -m tests.fixtures.fixture_host` serves, as the macOS workflow runs it."""

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fixture_host import FixtureHost
from sdenv_testlib import ROOT, TestInventory
from webui_fixtures import launch_records, serve_http


@pytest.fixture
def fixture_host(tmp_path, test_inventory):
    """The fixture host of tests/fixtures/fixture_host.py (upstreams, the package index and two small models
    served over HTTP) under a world-readable directory, and an inventory pointing at it."""
    root = Path(f"/tmp/sdt-verify-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        host = FixtureHost(root)
        with serve_http(host.served) as server:
            inventory = test_inventory(**host.host_vars(server.url, sdenv_webui_python="/usr/bin/python3"))
            yield inventory, host.upstream, root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def served_fixture_host(tmp_path, throwaway_user):
    """The same host stood up by `python -m tests.fixtures.fixture_host`, exactly as the macOS workflow does
    it (both apps: `--apps webui,comfyui`): a separate process serving until SIGTERM, its env file, the
    inventory it writes, whose ComfyUI repository answers git over HTTP."""
    root = Path(f"/tmp/sdt-cli-{os.getpid()}-{secrets.token_hex(4)}")
    env_file = tmp_path / "fixture.env"
    argv = [sys.executable, "-m", "tests.fixtures.fixture_host", "--root", str(root), "--user", throwaway_user,
            "--env-file", str(env_file), "--apps", "webui,comfyui",
            "--var", "sdenv_webui_python=/usr/bin/python3"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not env_file.exists():
            assert proc.poll() is None, f"fixture_host exited {proc.returncode}: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "fixture_host wrote no env file within 300 s"
            time.sleep(0.2)
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert values["SDENV_FIXTURE_USER"] == throwaway_user and int(values["SDENV_FIXTURE_PID"]) == proc.pid
        path = Path(values["SDENV_FIXTURE_INVENTORY"])
        variables = yaml.safe_load(path.read_text())["all"]["hosts"]["localhost"]
        assert variables["sdenv_state_dir"] == str(root / "state"), variables
        assert variables["sdenv_apps"] == ["webui", "comfyui"], variables
        assert variables["sdenv_comfyui_port"] != variables["sdenv_webui_port"], variables
        comfyui = variables["sdenv_lock"]["comfyui"]
        assert comfyui["repo"].startswith(values["SDENV_FIXTURE_URL"] + "/"), comfyui
        heads = subprocess.run(
            ["git", "ls-remote", comfyui["repo"]], capture_output=True, text=True, check=False
        )
        assert heads.returncode == 0 and "refs/heads/" in heads.stdout, heads
        yield TestInventory(path, throwaway_user, root / "state", variables)
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=30) == 0, "fixture_host did not stop cleanly on SIGTERM"
        finally:
            proc.kill()
            subprocess.run(["rm", "-rf", str(root)], check=False)


def verify(make_target, inventory, **variables):
    """Run make verify; returns (exit code, rows by (check), output, report directory)."""
    result = make_target(
        "verify", inventory, VERIFY_REPORTS=str(Path(str(inventory)).parent / "reports"), **variables
    )
    match = re.search(r"^Report: (.+)/index\.html$", result.output, re.M)
    assert match, result
    report = Path(match.group(1))
    rows = json.loads((report / "checks.json").read_text())["checks"]
    return result.returncode, {row["check"]: row for row in rows}, result, report


def failing(rows):
    return {name: row["detail"] for name, row in rows.items() if row["result"] != "PASS"}


def as_user(user, *argv):
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, check=True)


@pytest.fixture
def probe_peer():
    """A non-loopback address in a network namespace made here (veth pair): reachable from this machine's
    namespace, so the probe from inside the cut proves the cut, not a dead address."""
    tag = secrets.token_hex(3)
    netns, host_if, peer_if = f"sdt{tag}", f"sdt{tag}a", f"sdt{tag}b"
    octet = int(tag[:2], 16) % 250 + 1
    host_ip, peer_ip = f"169.254.{octet}.1", f"169.254.{octet}.2"
    commands = [
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if],
        ["ip", "link", "set", peer_if, "netns", netns],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "-n", netns, "addr", "add", f"{peer_ip}/30", "dev", peer_if],
        ["ip", "-n", netns, "link", "set", peer_if, "up"],
    ]
    try:
        for argv in commands:
            subprocess.run(argv, check=True, capture_output=True)
        yield [peer_ip, 9]
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def test_verify_passes_then_names_each_broken_thing(fixture_host, make_target, probe_peer, test_inventory):
    inventory, upstream, fixture_root = fixture_host
    provisioned = make_target("provision", inventory)
    assert provisioned.returncode == 0, provisioned.output[-3000:]

    code, rows, result, report = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)
    for expected in (
        f"dummy user {inventory.user} exists, home and shell",
        "WebUI at the pinned commit, clean tree",
        "model sdtckpt",
        "model sdtglasses",
        "venv has the pinned torch",
        "Hugging Face CLIP tokenizer cache",
        "provision record consistent",
        "pinned known-good snapshot",
        "ui-config.json customscript/sampler.py/txt2img/Sampling method/value",
    ):
        assert expected in rows, sorted(rows)
    assert "stat cache" in rows["model sdtckpt"]["detail"]
    assert (report / "junit.xml").is_file() and (report / "index.html").is_file()

    # OFFLINE (so LIVE): the fake API as the dummy, inside a network namespace with only lo.
    inventory = test_inventory(**{**inventory.variables, "sdenv_verify_probe": probe_peer})
    code, rows, result, report = verify(make_target, inventory, OFFLINE=1)
    assert code == 0 and not failing(rows), (failing(rows), result)
    cut = rows["LIVE network cut"]["detail"]
    assert "interfaces seen by the WebUI: lo;" in cut and "own network namespace" in cut, cut
    assert "from inside: unreachable" in cut and "from the host: refused" in cut, cut
    assert "Lora hashes" not in rows["LIVE txt2img 1woman"]["detail"]
    assert rows["LIVE txt2img with LoRA"]["result"] == "PASS"
    images = sorted(p.name for p in (report / "images" / "localhost").glob("*.png"))
    assert images == ["txt2img-1woman.png", "txt2img-with-LoRA.png"], images
    assert "txt2img-1woman.png" in (report / "index.html").read_text()

    home = Path(inventory.variables.get("sdenv_user_home", f"/home/{inventory.user}"))
    webui = home / "stable-diffusion-webui"
    store = home / "sd-models"  # settings.yml's sdenv_model_store

    # The server verify started is the tree's own launch, exactly as webui.sh runs it: the dummy, the tree
    # as working directory and first on sys.path, its venv, webui-user.sh's settings, nothing fetched; and
    # verify's flags come last in argv (after webui-user.sh's --port), so they are the ones in effect.
    started = [r for r in launch_records(webui) if "--exit" not in r["argv"] and "event" not in r][-1]
    assert started["uid"] == pwd.getpwnam(inventory.user).pw_uid != 0
    assert started["cwd"] == started["sys_path0"] == str(webui), started
    assert started["prefix"] == str(webui / "venv") and started["network_actions"] == [], started
    assert started["env"]["HF_HUB_OFFLINE"] == "1" and started["mode"] == "api", started
    argv = started["argv"]
    last_port = len(argv) - 1 - argv[::-1].index("--port")
    assert argv[last_port - 2 : last_port] == ["--api", "--nowebui"], argv
    assert started["port"] == int(argv[last_port + 1]) != inventory.variables["sdenv_webui_port"], argv
    assert str(inventory.variables["sdenv_webui_port"]) in argv[:last_port], argv
    # On loopback only: with --nowebui alone, v1.10.1 (and so the fixture) listens on every interface.
    assert started["host"] == "127.0.0.1", started
    # Stopped as the real server stops: verify waited for the WebUI's own graceful shutdown (it recorded its
    # end), not only for webui.sh, which dies at once on SIGTERM.
    assert any(r.get("event") == "stopped" and r["pid"] == started["pid"] for r in launch_records(webui))
    assert "(every process of it)" in rows["LIVE server stops"]["detail"], rows["LIVE server stops"]

    # 1. Another commit checked out.
    as_user(inventory.user, "git", "-C", str(webui), "checkout", "-q", upstream.webui_shas[1])
    code, rows, result, _ = verify(make_target, inventory)
    assert code != 0 and set(failing(rows)) == {"WebUI at the pinned commit, clean tree"}, failing(rows)
    assert (
        f"the lock pins {upstream.webui_shas[0][:12]}"
        in rows["WebUI at the pinned commit, clean tree"]["detail"]
    )
    as_user(inventory.user, "git", "-C", str(webui), "checkout", "-q", upstream.webui_shas[0])

    # 2. One byte of a model changed (in place: size and inode stay, mtime moves).
    ckpt = store / "checkpoints" / "sdtckpt.safetensors"
    original = ckpt.read_bytes()
    with open(ckpt, "r+b") as handle:
        handle.seek(len(original) - 1)
        handle.write(bytes([original[-1] ^ 0xFF]))
    code, rows, result, _ = verify(make_target, inventory)
    assert code != 0 and set(failing(rows)) == {"model sdtckpt"}, failing(rows)
    assert "the lock pins" in rows["model sdtckpt"]["detail"] and "sha256" in rows["model sdtckpt"]["detail"]
    ckpt.write_bytes(original)

    # 3. The LoRA removed: the static check and the LIVE LoRA checks all name it.
    lora = store / "loras" / "sdtglasses.safetensors"
    away = lora.with_name("sdtglasses.away")
    lora.rename(away)
    code, rows, result, _ = verify(make_target, inventory, LIVE=1)
    assert code != 0
    assert set(failing(rows)) == {
        "model sdtglasses",
        "LIVE loras include sdtglasses",
        "LIVE txt2img with LoRA",
    }, failing(rows)
    assert "is missing" in rows["model sdtglasses"]["detail"]
    assert "no Lora hashes entry for sdtglasses" in rows["LIVE txt2img with LoRA"]["detail"]
    # One root cause, the LIVE rows folded under it: in checks.json and first in what make prints.
    assert rows["model sdtglasses"]["root_cause"] and rows["model sdtglasses"]["id"] == "model:sdtglasses"
    for name in ("LIVE loras include sdtglasses", "LIVE txt2img with LoRA"):
        assert rows[name]["caused_by"] == "model:sdtglasses" and not rows[name]["root_cause"], rows[name]
    printed = result.output[result.output.index("= sdenv verify =") :]
    assert re.search(r"^localhost: 3 of \d+ checks fail, from 1 root cause ", printed, re.M), printed
    assert (
        printed.index("FAIL  model sdtglasses")
        < printed.index("2 more checks follow from it")
        < (printed.index("\ncheck "))
    ), printed
    away.rename(lora)

    # 4. A wrong sampler default in ui-config.json.
    ui_config = webui / "ui-config.json"
    saved = ui_config.read_text()
    doc = json.loads(saved)
    doc["customscript/sampler.py/txt2img/Sampling method/value"] = "Euler a"
    ui_config.write_text(json.dumps(doc))
    code, rows, result, _ = verify(make_target, inventory)
    key = "ui-config.json customscript/sampler.py/txt2img/Sampling method/value"
    assert code != 0 and set(failing(rows)) == {key}, failing(rows)
    assert "'Euler a', settings say 'DPM++ SDE'" in rows[key]["detail"]
    ui_config.write_text(saved)

    # 5. The login profile line removed (on Linux: the PATH line the homebrew role writes in its block).
    profile = home / (
        ".zprofile" if inventory.variables.get("sdenv_user_shell", "/bin/zsh").endswith("zsh") else ".profile"
    )
    saved = profile.read_text()
    profile.write_text("\n".join(line for line in saved.splitlines() if line.strip() != "export PATH") + "\n")
    code, rows, result, _ = verify(make_target, inventory)
    assert code != 0 and set(failing(rows)) == {"login profile line export PATH"}, failing(rows)
    assert "0 times (wanted exactly once)" in rows["login profile line export PATH"]["detail"]
    profile.write_text(saved)

    # 6. ui-config.json replaced by the dummy's link to a root-only file holding the right values: verify
    # reads the dummy's files as the dummy, so it never shows (nor passes on) what root alone can read.
    root_only = fixture_root / "root-only"
    root_only.mkdir(mode=0o700)
    (root_only / "ui-config.json").write_text(ui_config.read_text())
    ui_config.rename(ui_config.with_name("ui-config.away"))
    ui_config.symlink_to(root_only / "ui-config.json")
    os.lchown(ui_config, pwd.getpwnam(inventory.user).pw_uid, pwd.getpwnam(inventory.user).pw_gid)
    code, rows, result, _ = verify(make_target, inventory)
    assert code != 0 and key in failing(rows), failing(rows)
    assert all(row.startswith("ui-config.json ") for row in failing(rows)), failing(rows)
    assert "Permission denied" in rows[key]["detail"], rows[key]
    ui_config.unlink()
    ui_config.with_name("ui-config.away").rename(ui_config)

    # Everything restored: verify passes again (the model was re-hashed, not trusted from the cache).
    time.sleep(0.01)
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)

    # A model the user must still fetch by hand (no URL, no pin) is one PENDING row, not a failure of the
    # rest; STRICT=1 (CI) refuses it in the preflight.
    variables = json.loads(json.dumps(inventory.variables))
    variables["sdenv_lock"]["models"].append(
        {"name": "sdtpending", "kind": "lora", "file": "sdtpending.safetensors", "urls": [], "sha256": None,
         "size": None, "source": "https://civitai.example/models/9", "trigger_words": [], "token_env": None}
    )  # fmt: skip
    variables["sdenv_models_enabled"] = [*variables["sdenv_models_enabled"], "sdtpending"]
    inventory = test_inventory(**variables)
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and set(failing(rows)) == {"model sdtpending"}, (failing(rows), result)
    assert rows["model sdtpending"]["result"] == "PENDING", rows["model sdtpending"]
    assert (
        "download sdtpending.safetensors from https://civitai.example/models/9"
        in rows["model sdtpending"]["detail"]
    )
    assert "1 pending" in result.output
    strict = make_target(
        "verify", inventory, VERIFY_REPORTS=str(Path(str(inventory)).parent / "reports"), STRICT=1
    )
    assert strict.returncode != 0 and "STRICT=1 refuses pending models: sdtpending" in strict.output, strict


def test_lifecycle_provision_snapshot_rollback_reset(served_fixture_host, make_target):
    """The whole sequence on one fixture host, stood up by the command the macOS workflow runs: provision,
    provision again (changed=0), verify, snapshot, pip-like churn, verify names what broke, rollback, verify
    passes, reset-dummy back to zero; with ComfyUI beside the WebUI, as the workflow chooses it."""
    inventory = served_fixture_host
    first = make_target("provision", inventory)
    assert first.returncode == 0, first.output[-3000:]
    # ansible-core 2.19 names what later versions remove (e.g. exit_json's warnings=): none may remain.
    assert "DEPRECATION" not in first.output, first.output
    again = make_target("provision", inventory)
    assert again.returncode == 0 and again.recap["changed"] == 0, again.output[-3000:]
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)
    comfyui_rows = {
        "ComfyUI at the pinned commit, clean tree",
        "ComfyUI venv holds exactly its locked set",
        "ComfyUI venv passes pip check",
        "ComfyUI extra_model_paths.yaml points at the model store",
    }
    assert comfyui_rows <= set(rows), sorted(rows)

    taken = make_target("snapshot", inventory, LABEL="before-churn")
    assert taken.returncode == 0, taken.output[-3000:]

    home = Path(f"/home/{inventory.user}")
    webui = home / "stable-diffusion-webui"
    ckpt = home / "sd-models" / "checkpoints" / "sdtckpt.safetensors"  # in the model store, a snapshot root
    ui_config = webui / "ui-config.json"
    stray = webui / "venv" / "sdt-added-by-pip.py"
    original_ckpt, original_ui = ckpt.read_bytes(), ui_config.read_bytes()
    # Churn as the dummy would make it: a file added, a model rewritten, a setting changed.
    as_user(inventory.user, "sh", "-c", f"echo 'import os' > {stray}")
    flip = "import sys; f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0xFF]))"
    as_user(inventory.user, "python3", "-c", flip, str(ckpt))
    doc = json.loads(original_ui)
    doc["customscript/sampler.py/txt2img/Sampling method/value"] = "Euler a"
    as_user(inventory.user, "sh", "-c", f"cat > {ui_config} <<'EOF'\n{json.dumps(doc)}\nEOF")
    code, rows, result, _ = verify(make_target, inventory)
    key = "ui-config.json customscript/sampler.py/txt2img/Sampling method/value"
    assert code != 0 and set(failing(rows)) == {key, "model sdtckpt"}, failing(rows)

    rolled = make_target("rollback", inventory, TO="latest", CONFIRM="yes")
    assert rolled.returncode == 0, rolled.output[-3000:]
    assert not stray.exists()
    assert ckpt.read_bytes() == original_ckpt and ui_config.read_bytes() == original_ui
    assert ckpt.stat().st_uid == pwd.getpwnam(inventory.user).pw_uid
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)

    reset = make_target("reset-dummy", inventory, CONFIRM="yes")
    assert reset.returncode == 0, reset.output[-3000:]
    assert not webui.exists(), "the WebUI tree survived reset-dummy"
    assert not (home / "ComfyUI").exists(), "the ComfyUI tree survived reset-dummy"
    record = json.loads((inventory.state_dir / "state.json").read_text())
    entry = record["users"][inventory.user]
    assert entry["created_by_toolkit"] is True, entry
    assert not {"webui", "comfyui"} & set(entry["components"]), entry

    # remove-dummy: back to zero, and verify says so plainly (one ABSENT row, the rest not provisioned,
    # the shared system packages still checked), with a non-zero exit because nothing is in place.
    removed = make_target("remove-dummy", inventory, CONFIRM="yes")
    assert removed.returncode == 0, removed.output[-3000:]
    record = json.loads((inventory.state_dir / "state.json").read_text())
    assert inventory.user not in json.dumps(record["users"]), record
    code, rows, result, _ = verify(make_target, inventory)
    user_check = f"dummy user {inventory.user} exists, home and shell"
    user_row = rows[user_check]
    assert code != 0 and user_row["result"] == "ABSENT", (user_row, result)
    assert "no entry in the provision record" in user_row["detail"] and "make provision" in user_row["detail"]
    others = {
        row["result"] for name, row in rows.items() if name != user_check and not name.startswith("package ")
    }
    assert others == {"NOT PROVISIONED"}, failing(rows)
    assert all(row["result"] == "PASS" for name, row in rows.items() if name.startswith("package ")), rows
    assert "1 absent" in result.output
