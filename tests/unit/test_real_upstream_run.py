"""The real-upstream lane's inventory (tests/manual/real_upstream_run.py): with ComfyUI among the served
mirrors it chooses both apps, pins the served (or stand-in) ComfyUI commit and gives ComfyUI its own port."""

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("real_upstream_run", ROOT / "tests/manual/real_upstream_run.py")
lane = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lane)

URL = "http://127.0.0.1:9"


def make_out(tmp_path, served, stand_ins=None):
    out = tmp_path / "out"
    for name in served:
        (out / "srv/git" / f"{name}.git").mkdir(parents=True)
    (out / "stand-ins.json").write_text(json.dumps(stand_ins or {}))
    models = tmp_path / "models"
    models.mkdir()
    (models / "sdtlora.safetensors").write_bytes(b"not a real LoRA, hashed only")
    return out, models


def host(out, models, capsys):
    lane.inventory(str(out), URL, "sdt0a1b2c", str(models))
    capsys.readouterr()
    return yaml.safe_load((out / "inventory/hosts.yml").read_text())["all"]["hosts"]["localhost"]


def test_a_served_comfyui_mirror_puts_comfyui_beside_the_webui_on_its_own_port(tmp_path, capsys):
    out, models = make_out(tmp_path, ["stable-diffusion-webui", "ComfyUI"], {"ComfyUI": "ab" * 20})
    vars_ = host(out, models, capsys)
    assert vars_["sdenv_apps"] == ["webui", "comfyui"]  # the preflight wants webui in it
    assert vars_["sdenv_lock"]["comfyui"]["repo"] == f"{URL}/git/ComfyUI.git"
    assert vars_["sdenv_lock"]["comfyui"]["commit"] == "ab" * 20  # the stand-in, as for the WebUI's repos
    assert vars_["sdenv_comfyui_port"] != vars_["sdenv_webui_port"]


def test_a_complete_comfyui_mirror_keeps_the_lock_commit(tmp_path, capsys):
    out, models = make_out(tmp_path, ["ComfyUI"])
    vars_ = host(out, models, capsys)
    assert vars_["sdenv_lock"]["comfyui"]["commit"] == lane.lock()["comfyui"]["commit"]
    assert lane.pins()["ComfyUI"] == lane.lock()["comfyui"]["commit"]


def test_without_a_comfyui_mirror_the_webui_runs_alone(tmp_path, capsys):
    out, models = make_out(tmp_path, ["stable-diffusion-webui"])
    vars_ = host(out, models, capsys)
    assert "sdenv_apps" not in vars_  # settings.yml's default, the WebUI alone
    assert vars_["sdenv_lock"]["comfyui"]["repo"] == lane.lock()["comfyui"]["repo"]
