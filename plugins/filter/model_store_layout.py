# Jinja filters for the model store's layout, so the roles' templates and defaults take each kind's folder from
# the one mapping in module_utils/model_store.py instead of spelling it again:
#   "{{ sdenv_model_store | sdenv_store_dirs }}"        -> {checkpoint: <store>/checkpoints, lora: <store>/loras}
#   "{{ sdenv_model_store | sdenv_store_webui_args }}"  -> [--ckpt-dir, <store>/checkpoints, --lora-dir, ...]
from __future__ import annotations

import sys
from pathlib import Path

# The module_utils directory beside this one, in this repository or in the installed collection.
_SHARED = Path(__file__).resolve().parents[1] / "module_utils"
if str(_SHARED) not in sys.path:
    sys.path.append(str(_SHARED))
import model_store  # noqa: E402


class FilterModule:
    def filters(self):
        return {
            "sdenv_store_dirs": model_store.kind_dirs,
            "sdenv_store_webui_args": model_store.webui_args,
        }
