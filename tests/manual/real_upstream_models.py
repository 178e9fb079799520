#!/usr/bin/env python3
"""Random-weight models for tests/manual/real_upstream_run.py: an SD 1.5-shaped checkpoint and a kohya-style LoRA.

    python real_upstream_models.py SD_SRC WEBUI_SRC CLIP_CONFIG_JSON OUT_DIR

Run it with a Python that has torch, transformers, omegaconf, einops, numpy, pillow and safetensors (any CPU
torch will do; about 11 GB of memory, 2.1 GB written). SD_SRC: a checkout of the pinned Stability-AI
stablediffusion commit (its ldm/ is imported); WEBUI_SRC: a checkout of the WebUI (configs/v1-inference.yaml,
extensions-builtin/Lora/networks.py); CLIP_CONFIG_JSON: roles/webui/files/clip-vit-large-patch14/config.json.

The UNet is instantiated from v1-inference.yaml's unet_config with the real ldm code, the VAE from its
ddconfig (Encoder/Decoder and the quant convs, as AutoencoderKL builds them), the text encoder as
transformers' CLIPTextModel from the config (FrozenCLIPEmbedder's `transformer`), the schedule buffers as
LatentDiffusion.register_schedule computes them; saved fp16. Zero-initialised UNet tensors get small noise,
so the output depends on every layer and the LoRA's effect shows. The LoRA covers every Linear of the UNet's
transformer blocks and of the text encoder's layers, named as kohya's sd-scripts names them, and each name
is checked with the WebUI's own conversion (networks.py's convert_diffusers_name_to_compvis).
Prints each file's size, sha256 and the 12-hex "addnet" hash the WebUI shows in `Lora hashes`. With the
same torch, a second run gives the same checkpoint byte for byte and the same LoRA tensors (same addnet
hash), but the LoRA file's sha256 may differ: safetensors writes the __metadata__ keys in no fixed order.
"""

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

sd_src, webui_src, clip_config, out = sys.argv[1:5]
sys.path.insert(0, sd_src)
from ldm.modules.diffusionmodules.model import Decoder, Encoder  # noqa: E402
from ldm.modules.diffusionmodules.util import make_beta_schedule  # noqa: E402
from ldm.util import instantiate_from_config  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

torch.manual_seed(20261130)
cfg = OmegaConf.load(os.path.join(webui_src, "configs", "v1-inference.yaml")).model.params

unet = instantiate_from_config(cfg.unet_config)
dd = cfg.first_stage_config.params.ddconfig
embed_dim = cfg.first_stage_config.params.embed_dim
vae = torch.nn.ModuleDict(
    {
        "encoder": Encoder(**dd),
        "decoder": Decoder(**dd),
        "quant_conv": torch.nn.Conv2d(2 * dd["z_channels"], 2 * embed_dim, 1),
        "post_quant_conv": torch.nn.Conv2d(embed_dim, dd["z_channels"], 1),
    }
)
text_config = CLIPTextConfig(**json.loads(Path(clip_config).read_text())["text_config"])
text = CLIPTextModel(text_config)

state = {}


def text_key(name):
    """SD 1.5 checkpoints name the text encoder's tensors text_model.*, as transformers 4.x's CLIPTextModel
    does. transformers 5.x dropped that level from the module names (encoder.layers.0...): both apps still
    load such a checkpoint (each renames that older layout), but the LoRA below then matched no text-encoder
    layer at all ("0 te"); found with transformers 5.25 in the ComfyUI real lane."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


for prefix, module, rename in (
    ("model.diffusion_model.", unet, str),
    ("first_stage_model.", vae, str),
    ("cond_stage_model.transformer.", text, text_key),
):
    for key, value in module.state_dict().items():
        state[prefix + rename(key)] = value
key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
state.setdefault(key, torch.arange(text_config.max_position_embeddings).expand((1, -1)).clone())

# LatentDiffusion.register_schedule (linear schedule, v1-inference.yaml's linear_start/end, 1000 steps)
betas = make_beta_schedule("linear", cfg.timesteps, linear_start=cfg.linear_start, linear_end=cfg.linear_end)
alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
prev = np.append(1.0, alphas_cumprod[:-1])
posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
schedule = {
    "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": prev,
    "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
    "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
    "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod), "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
    "posterior_variance": posterior_variance,
    "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
    "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
    "posterior_mean_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
}  # fmt: skip
for name, value in schedule.items():
    state[name] = torch.tensor(value, dtype=torch.float32)

zeroed = 0
for name, value in state.items():
    if value.is_floating_point() and name.startswith("model.") and not value.any():
        value.normal_(0, 0.02)
        zeroed += 1
state = {
    k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()
}  # an fp16 checkpoint
ckpt = os.path.join(out, "sdtreal_v15shape.safetensors")
save_file(state, ckpt)
print(
    f"checkpoint: {len(state)} tensors, {sum(v.numel() for v in state.values()) / 1e6:.1f} M values, {zeroed} zero-initialised tensors given noise"
)


# --- LoRA: every attention/feed-forward Linear of the UNet's transformer blocks and of the text encoder's
# layers, named as kohya's sd-scripts names them (diffusers module names with _), rank 4.
def compvis_to_kohya_unet(name):
    parts = name.split(".")  # input_blocks.N.1.rest / middle_block.1.rest / output_blocks.N.1.rest
    rest = "_".join(parts[3:]) if parts[0] != "middle_block" else "_".join(parts[2:])
    if parts[0] == "input_blocks":
        n = int(parts[1]) - 1
        return f"lora_unet_down_blocks_{n // 3}_attentions_{n % 3}_{rest}"
    if parts[0] == "output_blocks":
        n = int(parts[1])
        return f"lora_unet_up_blocks_{n // 3}_attentions_{n % 3}_{rest}"
    return f"lora_unet_mid_block_attentions_0_{rest}"


targets = {}
for name, module in unet.named_modules():
    if isinstance(module, torch.nn.Linear) and ".transformer_blocks." in name:
        targets[compvis_to_kohya_unet(name)] = ("diffusion_model_" + name.replace(".", "_"), module)
for name, module in text.named_modules():
    if isinstance(module, torch.nn.Linear) and ".encoder.layers." in text_key(name):
        name = text_key(name)
        targets["lora_te_" + name.replace(".", "_")] = ("transformer_" + name.replace(".", "_"), module)

# Check every key with the WebUI's own name conversion (extensions-builtin/Lora/networks.py, v1.10.1).
source = Path(webui_src, "extensions-builtin", "Lora", "networks.py").read_text()
tree = ast.parse(source)
wanted = {"re_digits", "re_x_proj", "re_compiled", "suffix_conversion", "convert_diffusers_name_to_compvis"}
nodes = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name in wanted)
         or (isinstance(n, ast.Assign) and any(getattr(t, "id", None) in wanted for t in n.targets))]  # fmt: skip
space = {"re": __import__("re")}
code = compile(ast.Module(body=nodes, type_ignores=[]), "networks.py", "exec")
exec(code, space)  # noqa: S102 - the WebUI's own name conversion, read from its source
for kohya, (compvis, _) in targets.items():
    got = space["convert_diffusers_name_to_compvis"](kohya, False)
    assert got == compvis, (kohya, got, compvis)

rank = 4
lora = {}
for kohya, (_, module) in targets.items():
    lora[f"{kohya}.lora_down.weight"] = (torch.randn(rank, module.in_features) * 0.05).half()
    lora[f"{kohya}.lora_up.weight"] = (torch.randn(module.out_features, rank) * 0.05).half()
    lora[f"{kohya}.alpha"] = torch.tensor(float(rank)).half()
metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
            "ss_base_model_version": "sd_v1", "ss_output_name": "sdtreal-glasses"}  # fmt: skip
lora_path = os.path.join(out, "sdtreal-glasses.safetensors")
save_file(lora, lora_path, metadata=metadata)
unet_n = sum(1 for k in targets if k.startswith("lora_unet"))
print(
    f"lora: {len(targets)} modules ({unet_n} unet, {len(targets) - unet_n} te), all mapped by networks.py's conversion"
)

for path in (ckpt, lora_path):
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    print(json.dumps({"file": os.path.basename(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "addnet12": hashlib.sha256(data[8 + n:]).hexdigest()[:12]}))  # fmt: skip
