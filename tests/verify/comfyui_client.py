"""ComfyUI's HTTP API as the verify suite uses it: the guide's generation as an API-format workflow.

    python3 comfyui_client.py live SPEC.json    # LIVE=1: start ComfyUI as the dummy, check, generate, stop

The live run starts, stops and cuts the network exactly as webui_client.py does for the WebUI (copied beside
this file on the host, and imported from there).

Runs on the verified host beside webui_client.py (stdlib only, Python >= 3.9). Facts it relies on (the
pinned v0.3.64's server.py, execution.py and nodes.py; shared/UPSTREAM.md "Other local apps"):
- POST /prompt {"prompt": <workflow>, "client_id"} answers {"prompt_id", "number", "node_errors"}, or 400
  {"error", "node_errors"} when a node class, an input name or a value (a model name not in the list, a
  sampler upstream does not have) is wrong: nothing runs then.
- GET /history/{prompt_id} is {} until the prompt ran, then {id: {"outputs": {node: {"images": [{filename,
  subfolder, type}]}}, "status": {"status_str", "completed"}}}.
- GET /view?filename=&subfolder=&type=output serves the PNG; GET /object_info/<class> lists a loader's models
  as the first element of its input's spec (input.required.ckpt_name[0], input.required.lora_name[0]).
- The guide's "DPM++ SDE Karras" is KSampler sampler_name dpmpp_sde with scheduler karras.
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SAMPLER, SCHEDULER = "dpmpp_sde", "karras"


class ComfyError(Exception):
    """A step against ComfyUI's API that cannot go on; the message names what and why."""


def guide_workflow(checkpoint, prompt, image, lora=None, negative="", prefix="sdenv-verify"):
    """The guide's txt2img as ComfyUI's API format: {node id: {"class_type", "inputs"}}, links [id, slot].

    CheckpointLoaderSimple -> LoraLoader (when a LoRA is given) -> CLIPTextEncode x2 -> EmptyLatentImage ->
    KSampler (dpmpp_sde / karras, the guide's seed, steps, cfg) -> VAEDecode -> SaveImage."""
    model, clip = ["1", 0], ["1", 1]
    workflow = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}
    if lora:
        workflow["2"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora,
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        }
        model, clip = ["2", 0], ["2", 1]
    workflow.update({
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": clip}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": clip}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": image["width"], "height": image["height"], "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": image["seed"], "steps": image["steps"], "cfg": image.get("cfg_scale", 7),
            "sampler_name": SAMPLER, "scheduler": SCHEDULER, "positive": ["3", 0], "negative": ["4", 0],
            "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    })  # fmt: skip
    return workflow


class ComfyClient:
    def __init__(self, base_url, timeout=30):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - http://127.0.0.1 only
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            raise ComfyError(f"{method} {path} failed: {exc}") from exc

    def get_json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise ComfyError(f"GET {path} answered {status}")
        return json.loads(body)

    def models(self, node_class, input_name):
        """The model names a loader node offers (what ComfyUI itself sees in its folders)."""
        info = self.get_json(f"/object_info/{urllib.parse.quote(node_class)}").get(node_class)
        if not info:
            raise ComfyError(f"ComfyUI has no node {node_class}")
        return list(info["input"]["required"][input_name][0])

    def checkpoints(self):
        return self.models("CheckpointLoaderSimple", "ckpt_name")

    def loras(self):
        return self.models("LoraLoader", "lora_name")

    def queue(self, workflow, client_id="sdenv-verify"):
        status, body = self.request("POST", "/prompt", {"prompt": workflow, "client_id": client_id})
        answer = json.loads(body or b"{}")
        if status != 200:
            error = answer.get("error") or {}
            raise ComfyError(
                f"ComfyUI refused the workflow ({status}): {error.get('message', '')} {error.get('details', '')}".strip()
                + (
                    f"; node errors: {json.dumps(answer.get('node_errors'))}"
                    if answer.get("node_errors")
                    else ""
                )
            )
        return answer["prompt_id"]

    def wait(self, prompt_id, deadline, interval=0.5, alive=lambda: True):
        """The prompt's history entry once it finished (successfully or not)."""
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
            if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                return entry
            if not alive():
                raise ComfyError("ComfyUI ended before the prompt finished")
            time.sleep(interval)
        raise ComfyError(f"the prompt {prompt_id} did not finish in time")

    def images(self, entry):
        """[(name, PNG bytes)] of every image the prompt's output nodes saved, fetched through /view."""
        found = []
        for output in (entry.get("outputs") or {}).values():
            for image in output.get("images", []):
                query = urllib.parse.urlencode(
                    {k: image.get(k, "") for k in ("filename", "subfolder", "type")}
                )
                status, body = self.request("GET", f"/view?{query}")
                if status != 200:
                    raise ComfyError(f"/view of {image.get('filename')} answered {status}")
                found.append((image["filename"], body))
        return found


# --- The live run (LIVE=1 / OFFLINE=1) --------------------------------------------------------------------


def wait_ready(client, deadline, alive, interval=0.5):
    """ComfyUI answers GET /system_stats once its server is up (after the nodes and the models' lists)."""
    while time.monotonic() < deadline:
        if not alive():
            raise ComfyError("ComfyUI exited before it answered")
        try:
            if client.request("GET", "/system_stats")[0] == 200:
                return
        except ComfyError:
            pass
        time.sleep(interval)
    raise ComfyError("ComfyUI did not answer in time")


def run_live(spec):
    """Start ComfyUI as the dummy on a free loopback port, check that it lists the store's models, queue the
    guide's workflow, fetch the PNG, stop. Returns {"checks": [...], "images": [...], "log_tail": ...}."""
    import webui_client as wc

    checks, images = wc.Checks(), []
    out_dir = spec["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "comfyui.log")
    offline = {}
    if spec.get("offline") == "netns":
        wc.bring_loopback_up()
        if spec.get("probe"):
            offline["probe_inside"] = wc.probe(*spec["probe"])
    port = wc.free_loopback_port()
    argv = [spec["python"], "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
            *spec.get("extra_args", [])]  # fmt: skip
    if spec.get("offline") == "sandbox":
        argv = ["sandbox-exec", "-p", wc.sandbox_profile(), *argv]
    started = time.monotonic()
    try:
        proc = wc.start_as_user(spec, argv, spec["comfyui_dir"], {}, log_path, what="ComfyUI")
    except (wc.LiveError, OSError) as exc:
        checks.add("server starts", False, f"could not start ComfyUI: {exc}")
        return {"checks": checks.items, "images": images, "log_tail": ""}
    client = ComfyClient(f"http://127.0.0.1:{port}", timeout=spec.get("request_timeout", 60))
    try:
        wait_ready(client, time.monotonic() + spec.get("ready_timeout", 600), lambda: proc.poll() is None)
        checks.add("server starts", True, f"127.0.0.1:{port} after {time.monotonic() - started:.0f} s")
        wc.check_cut(spec, proc, checks, offline, app="ComfyUI")
        listed = client.checkpoints()
        ckpt, lora = spec["checkpoint"], spec.get("lora")
        checks.add(f"lists checkpoint {ckpt}", ckpt in listed, f"CheckpointLoaderSimple offers {listed}")
        if lora:
            loras = client.loras()
            checks.add(f"lists LoRA {lora}", lora in loras, f"LoraLoader offers {loras}")
        begun = time.monotonic()
        workflow = guide_workflow(ckpt, spec["prompt"], spec["image"], lora, spec.get("negative", ""))
        entry = client.wait(client.queue(workflow), time.monotonic() + spec.get("generate_timeout", 1800),
                            alive=lambda: proc.poll() is None)  # fmt: skip
        status = (entry.get("status") or {}).get("status_str")
        found = client.images(entry) if status == "success" else []
        for name, png in found:
            with open(os.path.join(out_dir, name), "wb") as handle:
                handle.write(png)
            images.append({"name": f"ComfyUI {spec['prompt']}", "path": os.path.join(out_dir, name),
                           "prompt": spec["prompt"], "png": base64.b64encode(png).decode()})  # fmt: skip
        ok = status == "success" and len(found) == 1 and found[0][1].startswith(b"\x89PNG")
        checks.add(
            f"txt2img {spec['prompt']}",
            ok,
            f"{found[0][0]} in {time.monotonic() - begun:.1f} s ({SAMPLER} / {SCHEDULER}, seed "
            f"{spec['image']['seed']}, {spec['image']['steps']} steps)"
            if ok
            else f"status {status}, {len(found)} images: {json.dumps(entry.get('status'))[:300]}",
        )
    except ComfyError as exc:
        checks.add("API", False, str(exc))
    finally:
        checks.add("server stops", *wc.stop_server(proc, spec.get("stop_grace", 60)))
    return {"checks": checks.items, "images": images, "log_tail": wc.log_tail(log_path), "offline": offline}


def main(argv):
    if len(argv) == 3 and argv[1] == "live":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # webui_client.py, copied beside
        with open(argv[2], encoding="utf-8") as handle:
            spec = json.load(handle)
        json.dump(run_live(spec), sys.stdout)
        sys.stdout.write("\n")
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
