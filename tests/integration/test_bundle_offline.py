"""make bundle from the test fixtures, then a fresh copy of the project provisions a machine from it with no
network: inside a network namespace that has only `lo`, under strace, `make provision BUNDLE=...` (the
controller environment included), `make verify`, and a second provision with changed=0. Both apps: the inventory
chooses sdenv_apps [webui, comfyui], so the bundle carries ComfyUI's mirror, locks and wheels too, and the offline
provision clones and builds both.

The fixtures stand in for upstream (bare git repositories over HTTP, a PEP 503 package index over loopback
with the fixture's wheels, a real pip wheel, the controller's real uv and the controller's real requirements as
wheels, two small models). Debian packages are the one thing no bundle carries: the test installs any missing
ones first, with the network, as the README tells a user to.
"""

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import clip_tokenizer_files
import pytest
import yaml
from comfyui_fixtures import add_comfyui_upstream, git_head
from model_fixtures import random_safetensors, sha256_hex
from sdenv_testlib import ROOT, MakeResult, remove_user, run_make, user_exists
from system_package_status import package_status
from venv_index_fixtures import VenvIndex, controller_wheels
from webui_fixtures import build_webui_upstream, serve_http

SHIPPED = ROOT / "roles" / "webui" / "files" / "clip-vit-large-patch14"
SETTINGS = ROOT / "inventory" / "group_vars" / "all" / "settings.yml"
PLATFORM = f"{os.uname().sysname}-{os.uname().machine}"


def real_lock():
    with open(ROOT / "inventory" / "group_vars" / "all" / "lock.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sdenv_lock"]


def fresh_copy(dest):
    """The project's files as a clone of this commit would have them (tracked and new files, no .venv)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file() or source.is_symlink():
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


def install_missing_packages():
    """Debian packages are not carried by a bundle (the preflight says so): the machine gets them first."""
    names = yaml.safe_load(SETTINGS.read_text())["sdenv_linux_packages"]

    def run(argv):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr

    _, missing = package_status(run, names)
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip


def offline_make(clone, trace, target, **variables):
    """make TARGET in the fresh copy, inside a new network namespace with only lo up, every connect() traced."""
    argv = [
        "make",
        "--no-print-directory",
        "-C",
        str(clone),
        target,
        *[f"{k}={v}" for k, v in variables.items()],
    ]
    script = 'ip link set lo up && exec strace -f --seccomp-bpf -qq -e trace=connect -o "$0" "$@"'
    completed = subprocess.run(
        ["unshare", "--net", "--", "bash", "-c", script, str(trace), *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}, check=False,
    )  # fmt: skip
    Path(f"{trace}.log").write_text(completed.stdout)  # kept in the test's tmp_path for a failure's details
    return MakeResult(completed)


def network_connects(trace):
    """connect() calls to an IPv4/IPv6 address (any address: inside the namespace there is only lo, and the
    provision has no reason to use it)."""
    calls = [line for line in trace.read_text().splitlines() if "connect(" in line]
    return [line for line in calls if re.search(r"sa_family=AF_INET6?\b", line)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fixture upstream + package index served over loopback, an inventory laid out as a user's, models, and
    the bundle made from them (once for the module: the tests only read it or change copies)."""
    if shutil.which("strace") is None or shutil.which("unshare") is None:
        pytest.skip("needs strace and unshare (.ci/run installs them)")
    tmp_path = tmp_path_factory.mktemp("bundle")
    throwaway_user = "sdt" + secrets.token_hex(4)
    assert not user_exists(throwaway_user)
    root = Path(f"/tmp/sdt-bundle-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        upstream = build_webui_upstream(root, SHIPPED, clip_tokenizer_files.derived_files)
        add_comfyui_upstream(upstream)  # before the index, which then serves ComfyUI's wheels too
        wheels = controller_wheels(ROOT / "requirements.txt", tmp_path / "controller-wheels")
        index = VenvIndex(upstream, extra_sources=[wheels])
        models_src = root / "models-src"
        models_src.mkdir()
        ckpt, lora = random_safetensors(4096, seed=11), random_safetensors(1024, seed=12)
        (models_src / "sdtckpt.safetensors").write_bytes(ckpt)
        (models_src / "sdtglasses.safetensors").write_bytes(lora)
        with serve_http(root) as server:
            lock = index.extend_lock(upstream.lock(server.url, real_lock()))
            lock["models"] = [
                {"name": "sdtckpt", "kind": "checkpoint", "file": "sdtckpt.safetensors", "urls": [],
                 "sha256": sha256_hex(ckpt), "size": len(ckpt), "trigger_words": []},
                {"name": "sdtglasses", "kind": "lora", "file": "sdtglasses.safetensors", "urls": [],
                 "sha256": sha256_hex(lora), "size": len(lora), "trigger_words": ["glasses"]},
                # To fetch by hand (no URL, no pin): in no bundle, and no reason to refuse one.
                {"name": "sdtpending", "kind": "lora", "file": "sdtpending.safetensors", "urls": [],
                 "sha256": None, "size": None, "source": "https://civitai.example/models/9", "trigger_words": []},
            ]  # fmt: skip
            inventory = tmp_path / "inventory"
            group = inventory / "group_vars" / "all"
            group.mkdir(parents=True)
            (group / "settings.yml").symlink_to(SETTINGS)
            (group / "lock.yml").write_text(yaml.safe_dump({"sdenv_lock": lock}, sort_keys=False))
            index.resolve_locks(lock, group / "venv-lock", root / "lock-cache", server.url)
            host = {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "sdenv_user_name": throwaway_user,
                "sdenv_state_dir": str(tmp_path / "state"),
                "sdenv_snapshot_store": str(tmp_path / "snapshots"),
                "sdenv_tools_dir": str(root / "tools"),
                "sdenv_webui_uv_cache_dir": str(root / "uv-cache"),
                "sdenv_models_enabled": ["sdtckpt", "sdtglasses", "sdtpending"],
                "sdenv_models_bundle_dirs": [str(models_src)],
                "sdenv_webui_port": 7860 + secrets.randbelow(1000),
                "sdenv_apps": ["webui", "comfyui"],
                "sdenv_comfyui_port": 8900 + secrets.randbelow(1000),
            }
            (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}))
            bundle = root / "bundle"
            built = run_make("bundle", inventory / "hosts.yml", PLATFORM=PLATFORM, OUT=bundle,
                             INDEX_URL=index.url(server.url))  # fmt: skip
            assert built.returncode == 0, built
            yield {"root": root, "server": server, "inventory": inventory / "hosts.yml", "models_src": models_src,
                   "user": throwaway_user, "tmp": tmp_path, "bundle": bundle, "upstream": upstream}  # fmt: skip
    finally:
        remove_user(throwaway_user)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_bundle_provisions_a_machine_with_no_network(world):
    bundle = world["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["platform"] == PLATFORM
    assert {m["name"] for m in manifest["models"]} == {"sdtckpt", "sdtglasses"}
    comfyui_pin = world["upstream"].comfyui.shas[0]
    assert manifest["apps"] == ["webui", "comfyui"] and manifest["comfyui"]["commit"] == comfyui_pin
    assert {row["package"] for row in manifest["comfyui"]["wheels"].values()} >= {"torchsde", "pyyaml"}
    assert (bundle / "SHA256SUMS").is_file() and (bundle / "controller" / "requirements.txt").is_file()
    checked = run_make("bundle-check", world["inventory"], BUNDLE=bundle)
    assert checked.returncode == 0 and "verifies" in checked.output, checked

    # The machine side: nothing but the bundle and the distribution's packages.
    shutil.rmtree(world["models_src"])
    install_missing_packages()
    clone = fresh_copy(world["tmp"] / "clone")
    before = len(world["server"].requests)

    first = offline_make(
        clone, world["tmp"] / "trace-1", "provision", INVENTORY=world["inventory"], BUNDLE=bundle
    )
    assert first.returncode == 0, first
    assert "sdtpending: download sdtpending.safetensors from https://civitai.example/models/9" in first.output
    assert "Setting up the controller environment" in first.output, (
        "the fresh copy had a controller env already"
    )
    home = Path(pwd.getpwnam(world["user"]).pw_dir)
    webui = home / "stable-diffusion-webui"
    assert (webui / "venv" / ".sdenv-venv.json").is_file()
    assert (home / "sd-models" / "checkpoints" / "sdtckpt.safetensors").is_file()
    origin = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(webui), "remote", "get-url", "origin"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert origin.startswith(world["server"].url), "origin must name the lock's URL, not the bundle"
    comfyui = home / "ComfyUI"
    assert git_head(comfyui) == comfyui_pin
    assert (comfyui / "venv" / ".sdenv-venv.json").is_file()
    assert "sd-models" in (comfyui / "extra_model_paths.yaml").read_text()

    verified = offline_make(
        clone, world["tmp"] / "trace-2", "verify", INVENTORY=world["inventory"], BUNDLE=bundle
    )
    assert verified.returncode == 0, verified
    assert (
        "venv holds exactly the locked set" in verified.output and "venv passes pip check" in verified.output
    )
    assert all(
        row in verified.output
        for row in ("ComfyUI venv holds exactly its locked set", "ComfyUI venv passes pip check",
                    "ComfyUI extra_model_paths.yaml points at the model store")
    ), verified  # fmt: skip

    again = offline_make(
        clone, world["tmp"] / "trace-3", "provision", INVENTORY=world["inventory"], BUNDLE=bundle
    )
    assert again.returncode == 0, again
    assert again.recap["changed"] == 0, again

    assert world["server"].requests[before:] == [], "something reached the fixture upstream"
    for number in (1, 2, 3):
        attempts = network_connects(world["tmp"] / f"trace-{number}")
        assert attempts == [], f"run {number} tried the network: {attempts[:5]}"


def test_bundle_preflight_names_what_it_cannot_carry(world):
    """A bundle for another platform, or missing an enabled model, stops the run before anything changes; a
    changed file fails bundle-check. (Copies of the module's bundle, so the order of the tests does not matter.)"""
    bundle = world["root"] / "bundle-copy"
    shutil.copytree(world["bundle"], bundle, symlinks=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    before = subprocess.run(["getent", "passwd", world["user"]], capture_output=True, check=False).stdout

    # One refused run names both things the bundle lacks: an enabled model, and ComfyUI, as a bundle made
    # without comfyui in sdenv_apps (its manifest as make bundle writes it then) while the inventory chooses it.
    manifest["models"] = [m for m in manifest["models"] if m["name"] != "sdtglasses"]
    manifest["apps"] = ["webui"]
    del manifest["comfyui"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    refused = run_make("provision", world["inventory"], BUNDLE=bundle)
    assert refused.returncode != 0
    assert "does not carry the enabled model(s) sdtglasses" in refused.output, refused
    assert (
        f"The bundle {bundle} does not carry ComfyUI (it was made without comfyui in sdenv_apps): make the bundle "
        "again with comfyui in sdenv_apps, or take comfyui out of sdenv_apps." in refused.output
    ), refused
    assert "changed=0" in refused.output and "TASK [dummy_user" not in refused.output, (
        "it went past the preflight"
    )

    manifest["platform"] = "Darwin-arm64"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    other = run_make("provision", world["inventory"], BUNDLE=bundle)
    assert other.returncode != 0
    assert f"is for Darwin-arm64, this host is {PLATFORM}" in other.output, other
    tampered = run_make("bundle-check", world["inventory"], BUNDLE=bundle)
    assert tampered.returncode != 0 and "does not match its sha256 in SHA256SUMS" in tampered.output, tampered
    after = subprocess.run(["getent", "passwd", world["user"]], capture_output=True, check=False).stdout
    assert before == after, "a refused provision changed the account"
