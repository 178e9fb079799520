"""The ComfyUI fixture (tests/fixtures/comfyui_tree) is as strict as the pinned upstream where the toolkit
depends on it, driven through the verify suite's own client (tests/verify/comfyui_client.py) and with the
yaml the role writes (roles/comfyui/module_utils/comfyui_model_paths.py).

The fixture runs with this Python; torch, torchsde, requests and the front-end package are stand-in modules on its path
(in a provision they are the fixture wheels the locked venv installs)."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import comfyui_model_paths
import pytest
from model_fixtures import random_safetensors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verify"))

import comfyui_client

TREE = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui_tree"
IMAGE = {"width": 64, "height": 48, "steps": 4, "seed": 1234, "cfg_scale": 7}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def comfy(tmp_path):
    tree = tmp_path / "ComfyUI"
    shutil.copytree(TREE, tree)
    site = tmp_path / "site"
    for package in ("torch", "torchsde", "comfyui_frontend_package", "requests"):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
    store = tmp_path / "sd-models"
    for kind, name in (("checkpoints", "guide.safetensors"), ("loras", "glasses-2.safetensors")):
        (store / kind).mkdir(parents=True)
        (store / kind / name).write_bytes(random_safetensors(64))
    procs = []

    def start(*argv, yaml_text=None):
        if yaml_text is not None:
            (tree / "extra_model_paths.yaml").write_text(yaml_text)
        env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen([sys.executable, "main.py", *argv], cwd=tree, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        procs.append(proc)
        return proc

    yield tree, store, start
    for proc in procs:
        proc.kill()
        proc.wait()


def serve(start, yaml_text):
    port = free_port()
    proc = start("--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch", "--cpu",
                 yaml_text=yaml_text)  # fmt: skip
    client = comfyui_client.ComfyClient(f"http://127.0.0.1:{port}", timeout=10)
    for _ in range(200):
        if proc.poll() is not None:
            pytest.fail(f"the fixture ended: {proc.stdout.read()}")
        try:
            client.get_json("/queue")
            return client
        except comfyui_client.ComfyError:
            time.sleep(0.05)
    pytest.fail("the fixture never answered")


def toolkit_yaml(store):
    return comfyui_model_paths.merged_text(None, str(store), {"checkpoints": "checkpoints", "loras": "loras"})


def test_a_flag_upstream_does_not_have_stops_it_like_argparse(comfy):
    _, _, start = comfy
    proc = start("--listen", "127.0.0.1", "--disable-browser")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "unrecognized arguments: --disable-browser" in out


def test_a_venv_without_requests_stops_it_at_start_like_the_real_v0_3_64(comfy):
    """Upstream's requirements.txt does not name requests, yet server.py needs it (the real lane's finding):
    the toolkit's lock adds it, and the fixture fails as the real app does when it is missing."""
    tree, _, start = comfy
    shutil.rmtree(tree.parent / "site" / "requests")
    proc = start("--listen", "127.0.0.1", "--port", str(free_port()), "--disable-auto-launch", "--cpu")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "No module named 'requests'" in out


def test_two_vram_modes_at_once_are_refused_like_upstream(comfy):
    _, _, start = comfy
    proc = start("--cpu", "--lowvram")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "not allowed with argument" in out


def test_the_toolkits_yaml_shows_the_store_and_the_guide_workflow_makes_a_png(comfy):
    tree, store, start = comfy
    client = serve(start, toolkit_yaml(store))
    assert client.checkpoints() == ["guide.safetensors"] and client.loras() == ["glasses-2.safetensors"]
    workflow = comfyui_client.guide_workflow(
        "guide.safetensors", "1woman", IMAGE, lora="glasses-2.safetensors"
    )
    entry = client.wait(client.queue(workflow), time.monotonic() + 30, interval=0.05)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [(name, png)] = client.images(entry)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and (tree / "output" / name).read_bytes() == png
    again = client.wait(client.queue(workflow), time.monotonic() + 30, interval=0.05)
    other = client.wait(client.queue(comfyui_client.guide_workflow(
        "guide.safetensors", "1woman", dict(IMAGE, seed=1), lora="glasses-2.safetensors")), time.monotonic() + 30,
        interval=0.05)  # fmt: skip
    assert client.images(again)[0][1][-200:] == png[-200:] and client.images(other)[0][1][-200:] != png[-200:]
    record = [json.loads(line) for line in Path(f"{tree}.launch-record.jsonl").read_text().splitlines()]
    assert record[-1]["argv"][:2] == ["--listen", "127.0.0.1"]


@pytest.mark.parametrize(
    "key_fix",
    [
        lambda text: text.replace("checkpoints: checkpoints", "checkpoint: checkpoints"),  # not a folder name
        lambda text: text.replace("checkpoints: checkpoints", "Stable-diffusion: checkpoints"),  # the WebUI's
        lambda text: text.replace("base_path:", "basepath:"),  # then a folder name itself, no models
    ],
)
def test_a_wrong_yaml_key_shows_no_checkpoint_and_the_workflow_is_refused(comfy, key_fix):
    _, store, start = comfy
    client = serve(start, key_fix(toolkit_yaml(store)))
    assert client.checkpoints() == []
    workflow = comfyui_client.guide_workflow("guide.safetensors", "1woman", IMAGE)
    with pytest.raises(comfyui_client.ComfyError, match="Value not in list"):
        client.queue(workflow)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda w: w["6"]["inputs"].update(sampler_name="DPM++ SDE Karras"), "Value not in list"),
        (lambda w: w["6"].update(class_type="KSamplerr"), "node KSamplerr does not exist"),
        (lambda w: w["6"]["inputs"].pop("scheduler"), "Required input is missing"),
        (lambda w: w["5"]["inputs"].update(width=8), "smaller than min of 16"),
        (lambda w: w["6"]["inputs"].update(model=["3", 0]), "mismatch input_type(MODEL)"),
        (lambda w: w.pop("8"), "Prompt has no outputs"),
    ],
)
def test_the_prompt_is_validated_as_upstream_validates_it(comfy, change, words):
    _, store, start = comfy
    client = serve(start, toolkit_yaml(store))
    workflow = comfyui_client.guide_workflow("guide.safetensors", "1woman", IMAGE)
    change(workflow)
    with pytest.raises(comfyui_client.ComfyError, match="refused") as caught:
        client.queue(workflow)
    assert words in str(caught.value)
    status, _ = client.request("GET", "/view?filename=../x.png&type=output")
    assert status == 400
