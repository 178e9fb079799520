"""LIVE=1 / OFFLINE=1: start the WebUI as the dummy on the host, check its API, generate, stop.

The work happens on the host (tests/verify/webui_client.py, copied there and run with the Python Ansible uses
on that host), because the WebUI listens on the host's loopback only. OFFLINE=1 cuts the network of the whole
run: on Linux it runs inside `unshare --net` (a new network namespace with only `lo`), on macOS the WebUI
runs under `sandbox-exec` with a profile that denies all network but loopback.
"""

import base64
import json
import secrets
import shlex
from pathlib import Path

import comfyui_client
import model_pending
import webui_client
from verify_lib import NotProvisionedError, check, expect, quote

CLIENT_SOURCE = Path(webui_client.__file__).read_text(encoding="utf-8")
COMFYUI_CLIENT_SOURCE = Path(comfyui_client.__file__).read_text(encoding="utf-8")
# The guide's image when settings.yml does not say (a copy of its sdenv_verify_image, for inventories
# that do not read the repository's group_vars).
DEFAULT_IMAGE = {"width": 512, "height": 512, "steps": 20, "seed": 1234, "cfg_scale": 7}


def models_of_kind(target, kind):
    enabled = target.vars.get("sdenv_models_enabled")
    return [
        m
        for m in target.lock("models")
        if m.get("kind", "checkpoint") == kind
        and (enabled is None or m["name"] in enabled)
        and not model_pending.is_pending(m)  # not installed yet: its own row says pending
    ]


def checkpoint(target):
    wanted = (target.vars.get("sdenv_webui_ui_defaults") or {}).get("checkpoint")
    checkpoints = models_of_kind(target, "checkpoint")
    if not checkpoints:
        raise NotProvisionedError("lock.yml pins no checkpoint model")
    return next((m for m in checkpoints if m["file"] == wanted), checkpoints[0])


def lora(target):
    loras = models_of_kind(target, "lora")
    if not loras:
        return None
    model = loras[0]
    triggers = model.get("triggers") or model.get("trigger_words") or ["glasses"]
    return {
        "name": model["file"].rsplit(".", 1)[0],
        "trigger": triggers[0],
        "addnet_hash": model.get("addnet_hash") or model.get("addnet_sha256"),
    }


def sampler_and_scheduler(target):
    defaults = target.vars.get("sdenv_webui_ui_defaults") or {}
    return defaults.get("sampler", "DPM++ SDE"), defaults.get("scheduler", "Karras")


def live_items(target):
    if not target.options.live:
        return []
    sampler, scheduler = sampler_and_scheduler(target)
    prompt = target.vars.get("sdenv_verify_prompt", "1woman")
    file = checkpoint(target)["file"]
    names = ["server starts"]
    if target.options.offline:
        names.append("network cut")
    names += [f"sd-models lists {file}", f"samplers include {sampler}", f"schedulers include {scheduler}"]
    if lora(target):
        names.append(f"loras include {lora(target)['name']}")
    names += [f"txt2img {prompt}", f"sd-models hash of {file}"]
    if lora(target):
        names.append("txt2img with LoRA")
    return [*names, "server stops"]


def has_gpu(target):
    if target.darwin:
        return target.facts["architecture"] in ("arm64", "aarch64")  # Apple Silicon: the MPS backend
    nvidia = target.run("nvidia-smi -L")
    return (nvidia.rc == 0 and "GPU" in nvidia.stdout) or target.host.file("/dev/kfd").exists


def build_spec(target, out_dir):
    small = target.options.small or target.vars.get("sdenv_verify_small") is True
    image = {**DEFAULT_IMAGE, **(target.vars.get("sdenv_verify_image") or {})}
    if small:
        image.update(target.vars.get("sdenv_verify_small_image") or {"width": 256, "height": 256, "steps": 8})
    sampler, scheduler = sampler_and_scheduler(target)
    model = checkpoint(target)
    configured = [str(a) for a in target.vars.get("sdenv_webui_commandline_args") or []]
    cpu_only = not has_gpu(target) and "--no-half" not in configured
    spec = {
        "user": target.user,
        "webui_dir": target.vars["sdenv_webui_dir"],
        "extra_args": target.vars.get("sdenv_verify_live_args") or [],
        "cpu_only": cpu_only,
        "path": target.vars.get("sdenv_webui_run_path"),
        "out_dir": out_dir,
        "checkpoint": {"file": model["file"], "sha256": model["sha256"]},
        "lora": lora(target),
        "sampler": sampler,
        "scheduler": scheduler,
        "prompt": target.vars.get("sdenv_verify_prompt", "1woman"),
        "image": image,
        "ready_timeout": int(target.vars.get("sdenv_verify_ready_timeout") or 900),
        "generate_timeout": int(target.vars.get("sdenv_verify_generate_timeout") or 1800),
        "stop_grace": 60,
        "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} if target.options.offline else {},
    }
    if target.options.offline:
        spec["offline"] = "sandbox" if target.darwin else "netns"
        if target.vars.get("sdenv_verify_probe"):
            spec["probe"] = list(target.vars["sdenv_verify_probe"])
    return spec


PUT_FILE = "import base64, sys; open(sys.argv[1], 'wb').write(base64.b64decode(sys.argv[2]))"


def put_file(target, path, data):
    out = target.run(quote(target.facts["python"], "-c", PUT_FILE, path, base64.b64encode(data).decode()))
    expect(out.rc == 0, f"cannot write {path} on {target.name}: {out.stderr.strip()[-200:]}")


def live_run(target, app="webui"):
    """Run the live client once per host (and app); every live row reads its result. ComfyUI's client
    (comfyui_client.py) runs beside the WebUI's, whose start, stop and network cut it uses."""

    def run():
        work = f"/tmp/sdenv-verify-{secrets.token_hex(6)}"
        made = target.run(quote("mkdir", "-m", "0755", work))
        if made.rc != 0:
            return {"error": f"cannot make {work} on the host: {made.stderr.strip()}"}
        try:
            spec = build_spec(target, work) if app == "webui" else comfyui_spec(target, work)
            put_file(target, f"{work}/webui_client.py", CLIENT_SOURCE.encode())
            client = f"{work}/{app}_client.py"
            if app == "comfyui":
                put_file(target, client, COMFYUI_CLIENT_SOURCE.encode())
            put_file(target, f"{work}/spec.json", json.dumps(spec).encode())
            command = quote(target.facts["python"], client, "live", f"{work}/spec.json")
            if spec.get("probe"):
                outside = target.run(
                    quote(target.facts["python"], f"{work}/webui_client.py", "probe", *spec["probe"])
                )
                spec["probe_outside"] = outside.stdout.strip()
            if spec.get("offline") == "netns":
                spec["host_netns"] = target.run("readlink /proc/self/ns/net").stdout.strip()
                put_file(target, f"{work}/spec.json", json.dumps(spec).encode())
                command = "unshare --net -- " + command
            out = target.run(command)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.rc != 0 or not lines:
                return {
                    "error": f"the live client failed (exit {out.rc}): {(out.stderr or out.stdout).strip()[-400:]}"
                }
            result = json.loads(lines[-1])
            result["spec"] = spec
            save_images(target, result, app)
            return result
        finally:
            target.run(quote("rm", "-rf", work))

    return target.cached("live" if app == "webui" else f"live-{app}", run)


def save_images(target, result, app="webui"):
    directory = target.options.run_dir / "images" / target.name
    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    for image in result.get("images") or []:
        path = directory / Path(image["path"]).name
        path.write_bytes(base64.b64decode(image["png"]))
        saved.append(
            {
                "host": target.name,
                "name": image["name"],
                "path": str(path),
                "prompt": image["prompt"],
                "infotext": image.get("infotext", ""),
            }
        )
    (directory / f"{app}.log.txt").write_text(result.get("log_tail") or "", encoding="utf-8")
    result["saved_images"] = saved


def live_depends(item):
    """The server needs the tree, its venv and the models; every later step needs the server up."""
    needs = ["webui_commit", "venv_torch", "venv_matches_lock", "model"]
    return needs if item == "server starts" else [*needs, "live:server_starts"]


@check("LIVE {item}", items=live_items, depends=live_depends)
def test_live(target, item, note, request):
    live_row(live_run(target), item, note, request, "webui.log.txt")


def live_row(result, item, note, request, log):
    expect("error" not in result, result.get("error", ""))
    if item == "server starts":
        request.node.sdenv_images = result["saved_images"]
    found = [c for c in result["checks"] if c["name"] == item]
    if not found:
        failed = [c for c in result["checks"] if not c["ok"]]
        reason = f"{failed[0]['name']}: {failed[0]['detail']}" if failed else "the run stopped early"
        expect(False, f"not reached ({reason})")
    outcome = found[0]
    if item == "network cut" and result["spec"].get("probe_outside"):
        outcome["detail"] += f"; the same connect from the host: {result['spec']['probe_outside']}"
        expect(
            result["spec"]["probe_outside"] in ("connected", "refused"),
            f"the probe address {result['spec']['probe']} is not reachable from the host either"
            f" ({result['spec']['probe_outside']}): it proves nothing about the cut",
        )
    expect(outcome["ok"], outcome["detail"])
    note(outcome["detail"] + (f" (log: {shlex.quote(log)})" if item == "server stops" else ""))


# --- ComfyUI (role comfyui), when settings.yml sdenv_apps names it ------------------------------------------


def comfyui_models(target):
    """(checkpoint file, LoRA file or None): the WebUI's live run's models, as ComfyUI lists them from the store."""
    model = lora(target) and models_of_kind(target, "lora")[0]
    return checkpoint(target)["file"], model["file"] if model else None


def comfyui_live_items(target):
    if not target.options.live or "comfyui" not in (target.vars.get("sdenv_apps") or []):
        return []
    ckpt, lora_file = comfyui_models(target)
    names = [
        "server starts",
        *(["network cut"] if target.options.offline else []),
        f"lists checkpoint {ckpt}",
    ]
    names += [f"lists LoRA {lora_file}"] if lora_file else []
    return [*names, f"txt2img {target.vars.get('sdenv_verify_prompt', '1woman')}", "server stops"]


def comfyui_spec(target, out_dir):
    """The WebUI's spec (the guide's image, SMALL, the network cut), ComfyUI's tree, venv and models."""
    ckpt, lora_file = comfyui_models(target)
    return {
        **build_spec(target, out_dir),
        "comfyui_dir": target.vars["sdenv_comfyui_dir"],
        "python": f"{target.vars['sdenv_comfyui_venv_dir']}/bin/python",
        "extra_args": [str(a) for a in target.vars.get("sdenv_comfyui_extra_args") or []],
        "checkpoint": ckpt,
        "lora": lora_file,
    }


def comfyui_live_depends(item):
    needs = ["comfyui_commit", "comfyui_venv_matches_lock", "comfyui_model_paths"]
    return needs if item == "server starts" else [*needs, "comfyui_live:server_starts"]


@check("LIVE ComfyUI {item}", items=comfyui_live_items, depends=comfyui_live_depends)
def test_comfyui_live(target, item, note, request):
    live_row(live_run(target, "comfyui"), item, note, request, "comfyui.log.txt")
