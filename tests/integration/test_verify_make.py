"""make verify for real on this machine: provision the fixture host (the webui and models areas' fixture
builders, a throwaway dummy), verify passes every check, LIVE/OFFLINE against the FAKE WebUI API
(tests/fixtures/fake_webui_api.py, not the real WebUI) inside a real network namespace, then one thing
broken at a time must fail verify naming that thing."""

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import clip_tokenizer_files
import pytest
import yaml
from model_fixtures import random_safetensors, sha256_hex
from sdenv_testlib import ROOT
from venv_index_fixtures import venv_lock_vars
from webui_fixtures import build_webui_upstream, serve_http

SHIPPED = ROOT / "roles" / "webui" / "files" / "clip-vit-large-patch14"
FAKE_API = ROOT / "tests" / "fixtures" / "fake_webui_api.py"


def real_lock():
    with open(ROOT / "inventory" / "group_vars" / "all" / "lock.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sdenv_lock"]


@pytest.fixture
def fixture_host(tmp_path, test_inventory):
    """A world-readable fixture upstream over HTTP, two small models in a bundle, the fake API script."""
    root = Path(f"/tmp/sdt-verify-{os.getpid()}-{secrets.token_hex(4)}")
    upstream = build_webui_upstream(root, SHIPPED, clip_tokenizer_files.derived_files)
    bundle = root / "bundle"
    bundle.mkdir()
    ckpt, lora = random_safetensors(4096, seed=1), random_safetensors(1024, seed=2)
    (bundle / "sdtckpt.safetensors").write_bytes(ckpt)
    (bundle / "sdtglasses.safetensors").write_bytes(lora)
    shutil.copy(FAKE_API, root / "fake_webui_api.py")
    os.chmod(root / "fake_webui_api.py", 0o644)
    models = [
        {"name": "sdtckpt", "kind": "checkpoint", "file": "sdtckpt.safetensors", "urls": [],
         "sha256": sha256_hex(ckpt), "size": len(ckpt), "trigger_words": []},
        {"name": "sdtglasses", "kind": "lora", "file": "sdtglasses.safetensors", "urls": [],
         "sha256": sha256_hex(lora), "size": len(lora), "trigger_words": ["glasses"]},
    ]  # fmt: skip
    try:
        with serve_http(root) as server:
            venv = venv_lock_vars(upstream, server, real_lock())
            venv["sdenv_lock"]["models"] = models
            inventory = test_inventory(
                **venv,
                sdenv_webui_python="/usr/bin/python3",
                sdenv_webui_port=free_port(),
                sdenv_models_enabled=["sdtckpt", "sdtglasses"],
                sdenv_models_bundle_dirs=[str(bundle)],
                sdenv_snapshot_store=str(tmp_path / "snapshots"),
                sdenv_verify_live_command=["/usr/bin/python3", str(root / "fake_webui_api.py")],
                sdenv_verify_small=True,
            )
            yield inventory, upstream, root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verify(make_target, inventory, **variables):
    """Run make verify; returns (exit code, rows by (check), output, report directory)."""
    result = make_target(
        "verify", inventory, VERIFY_REPORTS=str(Path(str(inventory)).parent / "reports"), **variables
    )
    match = re.search(r"^Report: (.+)/index\.html$", result.output, re.M)
    assert match, result
    report = Path(match.group(1))
    rows = json.loads((report / "checks.json").read_text())
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
    inventory, upstream, _root = fixture_host
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
    models = webui / "models"

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
    ckpt = models / "Stable-diffusion" / "sdtckpt.safetensors"
    original = ckpt.read_bytes()
    with open(ckpt, "r+b") as handle:
        handle.seek(len(original) - 1)
        handle.write(bytes([original[-1] ^ 0xFF]))
    code, rows, result, _ = verify(make_target, inventory)
    assert code != 0 and set(failing(rows)) == {"model sdtckpt"}, failing(rows)
    assert "the lock pins" in rows["model sdtckpt"]["detail"] and "sha256" in rows["model sdtckpt"]["detail"]
    ckpt.write_bytes(original)

    # 3. The LoRA removed: the static check and the LIVE LoRA checks all name it.
    lora = models / "Lora" / "sdtglasses.safetensors"
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

    # Everything restored: verify passes again (the model was re-hashed, not trusted from the cache).
    time.sleep(0.01)
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)


def test_lifecycle_provision_snapshot_rollback_reset(fixture_host, make_target):
    """The whole sequence on one fixture host: provision, provision again (changed=0), verify, snapshot,
    pip-like churn, verify names what broke, rollback, verify passes, reset-dummy back to zero."""
    inventory, _upstream, _root = fixture_host
    first = make_target("provision", inventory)
    assert first.returncode == 0, first.output[-3000:]
    again = make_target("provision", inventory)
    assert again.returncode == 0 and again.recap["changed"] == 0, again.output[-3000:]
    code, rows, result, _ = verify(make_target, inventory)
    assert code == 0 and not failing(rows), (failing(rows), result)

    taken = make_target("snapshot", inventory, LABEL="before-churn")
    assert taken.returncode == 0, taken.output[-3000:]

    home = Path(f"/home/{inventory.user}")
    webui = home / "stable-diffusion-webui"
    ckpt = webui / "models" / "Stable-diffusion" / "sdtckpt.safetensors"
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
    record = json.loads((inventory.state_dir / "state.json").read_text())
    entry = record["users"][inventory.user]
    assert entry["created_by_toolkit"] is True and "webui" not in entry["components"], entry
