"""ComfyUI's HTTP API as the verify suite uses it: the guide's generation as an API-format workflow.

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

import json
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
