"""Role models through ansible-playbook: the real module, action plugin, tasks and make pin-models.

A throwaway user owns a WebUI-shaped directory; a local server (127.0.0.1, port 0) stands in for Civitai
(token, presigned redirect to another host) and Hugging Face. Asserts: files in place with owner and mode,
controller progress lines, the token never printed nor sent across hosts, a second run that changes
nothing, reads no model and makes no request (stat cache), cache.json pre-seeded, kill -9 of the module
mid-download then a resume that fetches only the remainder, one sentence for an unpinned entry and for no
network, and make pin-models showing then (CONFIRM=yes) recording a pin.
"""

import http.server
import json
import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from model_fixtures import ModelServer, random_safetensors, sha256_hex
from sdenv_testlib import ROOT, ansiballz_payload_dirs, remove_payload_dirs_left_by_a_kill

TOKEN = "tok-" + os.urandom(6).hex()
SECRET = b'{"password": "root-only-secret"}\n'


@pytest.fixture
def server():
    with ModelServer() as srv:
        yield srv


@pytest.fixture
def webui(throwaway_user):
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", throwaway_user], check=True)
    home = Path(pwd.getpwnam(throwaway_user).pw_dir)
    webui_dir = home / "stable-diffusion-webui"
    webui_dir.mkdir()
    os.chown(webui_dir, pwd.getpwnam(throwaway_user).pw_uid, pwd.getpwnam(throwaway_user).pw_gid)
    return webui_dir


@pytest.fixture
def models(server):
    ckpt = random_safetensors(6_000_000, seed=11)
    lora = random_safetensors(200_000, seed=12, metadata={"ss_network_dim": "8"})
    server.add_storage("/bucket/ckpt", data=ckpt)
    return {
        "ckpt": ckpt,
        "lora": lora,
        "lock": [
            {
                "name": "testckpt",
                "kind": "checkpoint",
                "file": "testckpt.safetensors",
                "urls": [server.add("/api/download/models/1", token=TOKEN, presign="/bucket/ckpt")],
                "sha256": sha256_hex(ckpt),
                "size": len(ckpt),
                "source": "https://civitai.example/models/1",
                "trigger_words": [],
                "token_env": "SDT_MODELS_TOKEN",
            },
            {
                "name": "testlora",
                "kind": "lora",
                "file": "testlora.safetensors",
                "urls": [server.add("/lora", data=lora)],
                "sha256": sha256_hex(lora),
                "size": None,
                "source": "https://hf.example/lora",
                "trigger_words": ["glasses"],
                "token_env": None,
            },
        ],
    }


def store_of(webui):
    """The model store of the `webui` fixture's account (settings.yml's default, ~/sd-models)."""
    return webui.parent / "sd-models"


def run_role(inventory, tmp_path, env=None, check=False, timeout=600):
    playbook = tmp_path / "models-only.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Role models only",
                    "hosts": "all",
                    "become": True,
                    "roles": ["models"],
                    "post_tasks": [
                        {
                            "name": "Report how each model was accepted",
                            "ansible.builtin.debug": {
                                "msg": "VERIFIED={{ sdenv_models_installed.results | map(attribute='verified_by') | join(',') }}"
                            },
                        }
                    ],
                }
            ]
        )
    )
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    if check:
        argv += ["--check", "--diff"]
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def recap(output):
    line = next(line for line in output.splitlines() if "ok=" in line and "changed=" in line)
    return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}


def token_hosts_for(lock):
    """The allow-list a user would write for these entries: each token may go to its entry's own download
    host (the local server under 127.0.0.1), as CIVITAI_TOKEN may go to civitai.com."""
    hosts = {}
    for entry in lock:
        if entry.get("token_env"):
            scheme, rest = entry["urls"][0].split("://", 1)
            hosts.setdefault(entry["token_env"], []).append(f"{scheme}://{rest.split('/', 1)[0]}")
    return hosts


def host_vars(webui, models, tmp_path, **extra):
    return {
        "sdenv_webui_dir": str(webui),
        "sdenv_lock": {"models": models["lock"]},
        "sdenv_models_token_hosts": token_hosts_for(models["lock"]),
        "sdenv_models_enabled": [m["name"] for m in models["lock"]],
        "sdenv_models_bundle_dirs": [str(tmp_path / "bundle")],
        "sdenv_user_python_interpreter": "/usr/bin/python3",
        **extra,
    }


def test_install_progress_rerun_and_cache(test_inventory, webui, models, server, tmp_path):
    server.routes["__storage__/bucket/ckpt"].rate = 800_000  # long enough for a progress line
    inventory = test_inventory(**host_vars(webui, models, tmp_path))
    env = {"SDT_MODELS_TOKEN": TOKEN}

    first = run_role(inventory, tmp_path, env=env)
    assert first.returncode == 0, first.stdout[-4000:]
    assert "VERIFIED=download,download" in first.stdout
    assert "testckpt  downloading" in first.stdout and "MB/s" in first.stdout and "ETA" in first.stdout
    assert TOKEN not in first.stdout
    api = server.requests_to("/api/download/models/1")
    storage = server.requests_to("/bucket/ckpt")
    assert api and all(r["authorization"] == f"Bearer {TOKEN}" for r in api)
    assert storage and all(r["authorization"] is None and r["host"].startswith("localhost:") for r in storage)

    user = pwd.getpwnam(inventory.user)
    ckpt = store_of(webui) / "checkpoints" / "testckpt.safetensors"
    lora = store_of(webui) / "loras" / "testlora.safetensors"
    assert ckpt.read_bytes() == models["ckpt"] and lora.read_bytes() == models["lora"]
    assert not (webui / "models").exists()  # nothing in the WebUI tree: it reads the store through its flags
    for path in (ckpt, lora, ckpt.parent, lora.parent, store_of(webui)):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid), path
    assert oct(ckpt.stat().st_mode & 0o777) == "0o644"
    assert not list(ckpt.parent.glob("*.part")) and not list(ckpt.parent.glob("*.rejected"))

    cache = json.loads((webui / "cache.json").read_text())
    assert cache["hashes"]["checkpoint/testckpt.safetensors"]["sha256"] == sha256_hex(models["ckpt"])
    assert cache["hashes"]["checkpoint/testckpt.safetensors"]["mtime"] >= ckpt.stat().st_mtime
    n = int.from_bytes(models["lora"][:8], "little")
    assert cache["hashes-addnet"]["lora/testlora"]["sha256"] == sha256_hex(models["lora"][8 + n :])
    assert (webui / "cache.json").stat().st_uid == user.pw_uid

    state = inventory.state_dir / "models"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "stat-cache.json").stat().st_mode & 0o777) == "0o600"

    requests_before = len(server.requests)
    atimes = {p: p.stat().st_atime_ns for p in (ckpt, lora)}
    second = run_role(inventory, tmp_path, env=env)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0
    assert "VERIFIED=stat-cache,stat-cache" in second.stdout  # neither model was read
    assert len(server.requests) == requests_before  # and nothing was asked of the network
    assert "downloading" not in second.stdout
    # Belt and braces where the filesystem keeps atime (strictatime/relatime after 24 h do not show a read).
    assert all(p.stat().st_atime_ns == atimes[p] or p.stat().st_atime_ns >= atimes[p] for p in atimes)

    check = run_role(inventory, tmp_path, env=env, check=True)
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 0, check.stdout[-3000:]

    # A cache.json the WebUI has taken over (its cache/ exists) is left alone.
    (webui / "cache").mkdir()
    ckpt.unlink()
    third = run_role(inventory, tmp_path, env=env)
    assert third.returncode == 0 and "VERIFIED=download,stat-cache" in third.stdout
    assert json.loads((webui / "cache.json").read_text()) == cache

    # An older provision's layout: the models in the WebUI tree, the store empty. CHECK=1 shows the move and
    # changes nothing; then they move into the store, checked against the lock, with no download.
    legacy = {
        ckpt: webui / "models" / "Stable-diffusion" / ckpt.name,
        lora: webui / "models" / "Lora" / lora.name,
    }
    for new, old in legacy.items():
        old.parent.mkdir(parents=True, exist_ok=True)
        os.rename(new, old)
    requests_before = len(server.requests)
    check = run_role(inventory, tmp_path, env=env, check=True)
    assert check.returncode == 0, check.stdout[-3000:]
    assert f"move {legacy[ckpt]} -> {ckpt} (SHA256 checked, no download)" in check.stdout, check.stdout[
        -3000:
    ]
    assert all(old.exists() for old in legacy.values()) and not ckpt.exists() and not lora.exists()
    moved = run_role(inventory, tmp_path, env=env)
    assert moved.returncode == 0, moved.stdout[-3000:]
    assert "VERIFIED=stat-cache,stat-cache" in moved.stdout  # hashed once by the move, not again
    assert len(server.requests) == requests_before
    assert ckpt.read_bytes() == models["ckpt"] and lora.read_bytes() == models["lora"]
    assert not any(old.exists() for old in legacy.values())  # the WebUI lists nothing twice

    # A file in the store the toolkit did not put there (no stat-cache entry) with other bytes: one sentence,
    # and nothing changes (no download over it, the LoRA beside it untouched).
    (state / "stat-cache.json").unlink()
    ckpt.write_bytes(b"the user's own fine-tune")
    lora_mtime = lora.stat().st_mtime_ns
    mine = run_role(inventory, tmp_path, env=env)
    said = " ".join(mine.stdout.split())
    assert mine.returncode != 0 and "Traceback" not in mine.stdout
    assert f"{ckpt} holds other bytes than model testckpt of the lock" in said, said[-3000:]
    assert "move your file elsewhere or give it another name" in said
    assert ckpt.read_bytes() == b"the user's own fine-tune" and lora.stat().st_mtime_ns == lora_mtime
    assert len(server.requests) == requests_before


def test_kill_9_of_the_module_then_resume(test_inventory, webui, models, server, tmp_path):
    models["lock"] = models["lock"][:1]
    server.routes["__storage__/bucket/ckpt"].rate = 500_000
    inventory = test_inventory(**host_vars(webui, models, tmp_path))
    env = {"SDT_MODELS_TOKEN": TOKEN}
    progress_files = (inventory.state_dir / "models").glob
    part = store_of(webui) / "checkpoints" / "testckpt.safetensors.part"
    payloads_before = ansiballz_payload_dirs("model_file")
    first = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(inventory),
            str(_playbook(tmp_path)),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        pid = None
        while pid is None or not part.exists() or part.stat().st_size < 1_000_000:
            assert first.poll() is None, first.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.1)
            try:
                doc = json.loads(next(progress_files(".testckpt.safetensors.*.progress.json")).read_text())
                pid = doc["pid"] if doc.get("phase") == "downloading" else None
            except (OSError, ValueError, KeyError, StopIteration):
                pid = None
        os.kill(pid, signal.SIGKILL)  # the module process itself, mid-body
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
        remove_payload_dirs_left_by_a_kill("model_file", payloads_before)  # only this test runs it meanwhile
    assert first.returncode != 0
    assert "ended without a result" in output and "run again to resume" in output, output[-3000:]
    assert "Traceback" not in output, output[-4000:]
    assert not (store_of(webui) / "checkpoints" / "testckpt.safetensors").exists()
    kept = part.stat().st_size
    assert 0 < kept < len(models["ckpt"])

    server.routes["__storage__/bucket/ckpt"].rate = None
    second = run_role(inventory, tmp_path, env=env)
    assert second.returncode == 0, second.stdout[-3000:]
    resume = server.requests_to("/bucket/ckpt")[-1]
    assert resume["range"] == f"bytes={kept}-"
    assert resume["sent"] == len(models["ckpt"]) - kept
    assert (store_of(webui) / "checkpoints" / "testckpt.safetensors").read_bytes() == models["ckpt"]


def _playbook(tmp_path):
    playbook = tmp_path / "plain.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "Role models", "hosts": "all", "become": True, "roles": ["models"]}])
    )
    return playbook


def test_unpinned_entry_is_one_sentence_before_any_download(test_inventory, webui, models, server, tmp_path):
    models["lock"][1]["sha256"] = None
    inventory = test_inventory(**host_vars(webui, models, tmp_path))
    result = run_role(inventory, tmp_path)
    assert result.returncode != 0
    assert "testlora has no pinned SHA256 in lock.yml: run `make pin-models`" in result.stdout
    assert "Traceback" not in result.stdout
    assert server.requests == []  # refused before anything was fetched


def test_no_network_is_one_sentence_naming_the_alternatives(test_inventory, webui, models, tmp_path):
    for entry in models["lock"]:
        entry["urls"] = ["http://127.0.0.1:9/unreachable"]
    inventory = test_inventory(**host_vars(webui, models, tmp_path))
    result = run_role(inventory, tmp_path)
    assert result.returncode != 0
    assert (
        "could not reach 127.0.0.1 (Connection refused): add a reachable mirror URL or a local bundle"
        in result.stdout
    )
    assert "Traceback" not in result.stdout
    assert not list((store_of(webui) / "checkpoints").iterdir())


def test_a_rejected_download_is_kept_root_only_in_the_state_directory(
    test_inventory, webui, models, server, tmp_path, throwaway_user
):
    # Issue 19 item 5: what a URL sent and the pin refused is never left where the dummy can read or move it.
    lora = dict(models["lock"][1], sha256="f" * 64)
    inventory = test_inventory(**host_vars(webui, {"lock": [lora]}, tmp_path))
    result = run_role(inventory, tmp_path)
    assert result.returncode != 0
    rejected = inventory.state_dir / "models" / "rejected" / "testlora.safetensors.rejected"
    said = " ".join(result.stdout.split())  # the failure's msg may be wrapped over lines (YAML result format)
    assert f"it was kept at {rejected} (readable by root only) for inspection" in said
    assert rejected.read_bytes() == models["lora"]
    assert (rejected.stat().st_uid, rejected.stat().st_mode & 0o777) == (0, 0o600)
    assert (rejected.parent.stat().st_uid, rejected.parent.stat().st_mode & 0o777) == (0, 0o700)
    assert [p for p in store_of(webui).rglob("*") if p.is_file()] == []  # nothing in the store
    as_dummy = subprocess.run(
        ["runuser", "-u", throwaway_user, "--", "cat", str(rejected)], capture_output=True
    )
    assert as_dummy.returncode != 0 and as_dummy.stdout == b""


def test_bundle_directory_serves_an_offline_machine(test_inventory, webui, models, tmp_path):
    inventory = offline_inventory(test_inventory, webui, models, tmp_path)
    result = run_role(inventory, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (store_of(webui) / "loras" / "testlora.safetensors").read_bytes() == models["lora"]


def test_make_pin_models_shows_then_records(test_inventory, make_target, models, server, tmp_path):
    lora = models["lora"]
    lock_text = (
        "---\nsdenv_lock:\n  # --- Models (role models) ---\n  models:\n"
        "    - name: testlora\n      kind: lora\n      file: testlora.safetensors\n"
        f"      urls:\n        - {server.url('/lora')}\n"
        "      sha256: null  # none published\n      size: null\n"
        "      source: https://hf.example/lora\n      token_env: null\n"
    )
    lock_file = tmp_path / "lock.yml"
    lock_file.write_text(lock_text)
    inventory = test_inventory(
        sdenv_lock=yaml.safe_load(lock_text)["sdenv_lock"],
        sdenv_models_bundle_dirs=[str(tmp_path / "bundle")],
        sdenv_models_lock_file=str(lock_file),
    )
    shown = make_target("pin-models", inventory=inventory)
    assert shown.returncode == 0, shown.output[-5000:]
    assert f"testlora: testlora.safetensors, {len(lora)} bytes, SHA256 {sha256_hex(lora)}" in shown.output
    assert "source https://hf.example/lora" in shown.output
    assert "Not written" in shown.output and lock_file.read_text() == lock_text

    recorded = make_target("pin-models", inventory=inventory, CONFIRM="yes")
    assert recorded.returncode == 0, recorded
    entry = yaml.safe_load(lock_file.read_text())["sdenv_lock"]["models"][0]
    assert entry["sha256"] == sha256_hex(lora) and entry["size"] == len(lora)
    assert "# pinned by make pin-models" in lock_file.read_text()
    assert len(server.requests_to("/lora")) == 1  # the second run hashed nothing and fetched nothing


def test_provision_installs_the_rest_and_lists_a_pending_model(
    test_inventory, make_target, webui, models, server, tmp_path
):
    """A model with neither URL nor pin (the user fetches it by hand) does not stop make provision: the
    rest is installed, nothing is fetched for it, and the run ends with what to do; STRICT=1 refuses."""
    pending = {
        "name": "sdtpending", "kind": "lora", "file": "sdtpending.safetensors", "urls": [], "sha256": None,
        "size": None, "source": "https://civitai.example/models/9", "trigger_words": [], "token_env": None,
    }  # fmt: skip
    models["lock"] = [models["lock"][1], pending]  # testlora (pinned, no token) and the pending one
    inventory = test_inventory(**host_vars(webui, models, tmp_path))
    result = make_target("provision", inventory, ARGS="--tags models")
    assert result.returncode == 0, result.output[-5000:]
    lora_dir = store_of(webui) / "loras"
    assert (lora_dir / "testlora.safetensors").read_bytes() == models["lora"]
    assert not (lora_dir / "sdtpending.safetensors").exists()
    assert "Pending (no URL and no pin in lock.yml, so not fetched): sdtpending" in result.output, (
        result.output
    )
    closing = result.output[result.output.index("Say what is left to do") :]
    assert "1 model is still to fetch by hand; everything else is in place:" in closing
    assert (
        f"sdtpending: download sdtpending.safetensors from https://civitai.example/models/9 into the bundle"
        f" directory {tmp_path / 'bundle'}, then run `make pin-models`"
    ) in closing
    assert "`make pin-models CONFIRM=yes`" in closing
    assert [r for r in server.requests if "sdtpending" in r["path"]] == []

    strict = make_target("provision", inventory, ARGS="--tags models", STRICT="1")
    assert strict.returncode != 0
    assert "STRICT=1 refuses pending models: sdtpending has no URL and no pinned SHA256" in strict.output


def test_the_controllers_proxy_reaches_the_download_through_become(
    test_inventory, make_target, webui, models, tmp_path
):
    """HTTP_PROXY on the controller reaches the model download on the host (the provision play's environment,
    set inside the become command): the model's host does not exist, only the proxy knows it. The preflight's
    probe goes through the same proxy."""
    lora = models["lora"]
    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, body):
            seen.append((self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Length", str(len(lora)))
            self.end_headers()
            if body:
                self.wfile.write(lora)

        def do_HEAD(self):
            self.reply(False)

        def do_GET(self):
            self.reply(True)

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        models["lock"] = [{**models["lock"][1], "urls": ["http://sdt-models.invalid/lora"]}]
        inventory = test_inventory(**host_vars(webui, models, tmp_path))
        # Root becoming root skips sudo unless told not to: make the download go through sudo (which resets
        # the environment) as it does for the dummy's git and uv tasks.
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}", "NO_PROXY": "", "no_proxy": "",
               "ANSIBLE_BECOME_ALLOW_SAME_USER": "True"}  # fmt: skip
        result = make_target("provision", inventory, ARGS="--tags models", env=env)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.output[-5000:]
    assert (store_of(webui) / "loras" / "testlora.safetensors").read_bytes() == lora
    assert seen == [("HEAD", "http://sdt-models.invalid/lora"), ("GET", "http://sdt-models.invalid/lora")], (
        seen
    )


# --- Root never follows the dummy's links (issue 19) -------------------------------------------------------


def dummy_link(link, target, user):
    """A symbolic link the dummy made (it owns it, in its own directory)."""
    link.symlink_to(target)
    account = pwd.getpwnam(user)
    os.lchown(link, account.pw_uid, account.pw_gid)


@pytest.fixture
def root_only(tmp_path):
    """A root-only directory holding a secret, standing for /root or /etc. The secret is a JSON object, so
    a cache.json linked to it parses: read through the link, it would be merged and written back out."""
    directory = tmp_path / "root-only"
    directory.mkdir(mode=0o700)
    secret = directory / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return directory


def offline_inventory(test_inventory, webui, models, tmp_path):
    """The test inventory with the models served from a bundle directory (no server needed)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "testckpt.safetensors").write_bytes(models["ckpt"])
    (bundle / "testlora.safetensors").write_bytes(models["lora"])
    for entry in models["lock"]:
        entry["urls"] = ["http://127.0.0.1:9/unreachable"]
    return test_inventory(**host_vars(webui, models, tmp_path))


def refused(inventory, tmp_path, sentence):
    """Run the role; it must fail with `sentence` and no traceback."""
    result = run_role(inventory, tmp_path)
    assert result.returncode != 0
    assert sentence in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    return result


def untouched(directory):
    secret = directory / "secret"
    st = secret.stat()
    return (
        sorted(p.name for p in directory.iterdir()) == ["secret"]
        and secret.read_bytes() == SECRET
        and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
    )


def test_a_cache_json_linked_to_a_root_only_file_is_refused_and_the_file_stays_roots(
    test_inventory, webui, models, tmp_path, root_only
):
    inventory = offline_inventory(test_inventory, webui, models, tmp_path)
    dummy_link(webui / "cache.json", root_only / "secret", inventory.user)
    result = refused(
        inventory,
        tmp_path,
        f"{webui}/cache.json is a symbolic link, and root never reads or writes through the dummy's links: "
        "replace it with a regular file",
    )
    assert "root-only-secret" not in result.stdout
    assert untouched(root_only) and (webui / "cache.json").is_symlink()


@pytest.mark.parametrize("folder", ["stable-diffusion-webui/models/Stable-diffusion", "sd-models/loras"])
def test_a_model_folder_linked_to_a_root_owned_directory_gets_nothing(
    test_inventory, webui, models, tmp_path, root_only, folder
):
    """The store's folders and, for the move out of it, the WebUI tree's old ones."""
    inventory = offline_inventory(test_inventory, webui, models, tmp_path)
    user = pwd.getpwnam(inventory.user)
    home = webui.parent
    (home / folder).parent.mkdir(parents=True, exist_ok=True)
    os.chown((home / folder).parent, user.pw_uid, user.pw_gid)
    dummy_link(home / folder, root_only, inventory.user)
    refused(
        inventory,
        tmp_path,
        f"{home}/{folder} is a symbolic link that another account can change, and the toolkit does not "
        "follow links there",
    )
    assert untouched(root_only)


def test_a_webui_directory_replaced_by_a_link_is_refused_before_anything_is_written(
    test_inventory, webui, models, tmp_path, root_only
):
    inventory = offline_inventory(test_inventory, webui, models, tmp_path)
    webui.rmdir()
    dummy_link(webui, root_only, inventory.user)
    refused(
        inventory,
        tmp_path,
        f"sets sdenv_webui_dir to '{webui}': expected a path with no symbolic link another account can change; "
        f"{webui} is one",
    )
    assert untouched(root_only)
