#!/usr/bin/env python3
"""Stand-in models for timing the toolkit on the real tree (tests/manual/real_upstream_run.py), without torch.

    python3 real_upstream_standin_models.py OUT_DIR

Writes OUT_DIR/standin-sd15.safetensors (2,132,001,912 bytes: an SD 1.5 fp16 checkpoint's size) and
OUT_DIR/standin-lora.safetensors (37.8 MB): valid safetensors files (header, F16 tensors, offsets) whose data are
random bytes, so the models role installs, hashes and stores them as it does real ones, and the snapshot store
and the fast path see files of a real checkpoint's size. The WebUI cannot generate with them (no real layer
names): for `make verify LIVE=1` or an image, use real_upstream_models.py (torch, ~11 GB of memory) instead.
About 45 s (the random bytes) and no memory to speak of; `inventory` pins them as it pins any *.safetensors.
"""

import json
import os
import struct
import sys
from pathlib import Path

CHUNK = 16 << 20


def write(path, tensors):
    """A safetensors file of F16 tensors [(name, element count)] holding random bytes."""
    header, offset = {}, 0
    for name, count in tensors:
        header[name] = {"dtype": "F16", "shape": [count], "data_offsets": [offset, offset + 2 * count]}
        offset += 2 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data start 8-byte aligned, as safetensors writes them
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        left = offset
        while left:
            size = min(left, CHUNK)
            handle.write(os.urandom(size))
            left -= size


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    blocks = [(f"model.diffusion_model.block{i}.weight", 1_066_000_000 // 16) for i in range(16)]
    write(out / "standin-sd15.safetensors", blocks)
    write(
        out / "standin-lora.safetensors",
        [(f"lora_unet_block{i}.lora_down.weight", 18_900_000 // 8) for i in range(8)],
    )
    for path in sorted(out.glob("standin-*.safetensors")):
        print(f"{path} {path.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
