# The one model store: each model of the lock once, at <store>/<kind folder>/<file>, and every app sees it
# in its own format. This file is the one place that says which folder a kind goes to; the roles' templates
# (filter plugins/filter/model_store.py), the verify suite, the benchmarks and ComfyUI's extra_model_paths.yaml
# all take it from here. Stdlib only, no I/O: it is imported on the controller and on the hosts.
#
# The folder names are ComfyUI's own model types (folder_paths.py: checkpoints, loras), so ComfyUI's
# extra_model_paths.yaml maps each type to the folder of the same name. The WebUI reads the same folders
# through its own flags, not through links (README "One model store"): root follows no link the dummy could
# have made, and deleting an app's folder can never delete a file in the store.
from __future__ import annotations

import posixpath

# kind (lock.yml `kind`) -> folder under the store (ComfyUI's model type of the same meaning).
KIND_DIRS = {"checkpoint": "checkpoints", "lora": "loras"}

# Where WebUI v1.10.1 keeps each kind without flags, under its tree: modules/sd_models.py
# (model_dir = "Stable-diffusion" under models_path) and extensions-builtin/Lora/preload.py (--lora-dir's
# default models_path/Lora). The toolkit installed models there before the store; role models moves them out.
WEBUI_KIND_DIRS = {"checkpoint": "models/Stable-diffusion", "lora": "models/Lora"}

# The WebUI's flag for each kind's folder. --ckpt-dir (modules/cmd_args.py) is scanned before
# models/Stable-diffusion, which the WebUI still scans (modules/modelloader.load_models): a copy left there
# would be listed under the same title and win. --lora-dir (extensions-builtin/Lora/preload.py, parsed by the
# server's parser after the built-in extensions' preload) replaces models/Lora.
WEBUI_FLAGS = {"checkpoint": "--ckpt-dir", "lora": "--lora-dir"}


class StoreLayoutError(ValueError):
    """One sentence: an unknown kind."""


def kind_dir(store, kind):
    """The store's folder for `kind`."""
    try:
        return posixpath.join(store, KIND_DIRS[kind])
    except KeyError:
        raise StoreLayoutError(
            f"unknown model kind {kind!r}: expected one of {', '.join(sorted(KIND_DIRS))}"
        ) from None


def kind_dirs(store):
    """{kind: folder} for the store at `store`."""
    return {kind: kind_dir(store, kind) for kind in KIND_DIRS}


def store_path(store, kind, file):
    """Where a model of `kind` named `file` lives in the store."""
    return posixpath.join(kind_dir(store, kind), file)


def webui_kind_dirs(webui_dir):
    """{kind: folder} where the WebUI keeps models without flags (the layout before the store)."""
    return {kind: posixpath.join(webui_dir, rel) for kind, rel in WEBUI_KIND_DIRS.items()}


def webui_args(store):
    """The WebUI's COMMANDLINE_ARGS that make it read the store: ['--ckpt-dir', dir, '--lora-dir', dir]."""
    args = []
    for kind, flag in WEBUI_FLAGS.items():
        args += [flag, kind_dir(store, kind)]
    return args
