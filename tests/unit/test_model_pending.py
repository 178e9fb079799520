"""Which enabled models are pending (to fetch by hand) and the sentences the run ends with
(plugins/module_utils/model_pending.py, sdenv_messages.py)."""

import model_pending

PINNED = {
    "name": "ckpt",
    "kind": "checkpoint",
    "file": "ckpt.safetensors",
    "urls": ["https://x/1"],
    "sha256": "ab" * 32,
}
TO_PIN = {
    "name": "withurl",
    "kind": "lora",
    "file": "withurl.safetensors",
    "urls": ["https://x/2"],
    "sha256": None,
}
BY_HAND = {
    "name": "glasses-2",
    "kind": "lora",
    "file": "glasses-2.safetensors",
    "urls": [],
    "sha256": None,
    "source": "https://civitai.com/ (search: Round glasses | Accessory)",
}


def test_classification():
    assert [model_pending.is_pending(m) for m in (PINNED, TO_PIN, BY_HAND)] == [False, False, True]
    assert [model_pending.needs_pin(m) for m in (PINNED, TO_PIN, BY_HAND)] == [False, True, False]
    # A pinned entry without URLs is served from a bundle directory: not pending.
    assert not model_pending.is_pending({**BY_HAND, "sha256": "cd" * 32})


def test_only_enabled_models_are_pending():
    models = [PINNED, TO_PIN, BY_HAND]
    assert model_pending.pending(models, ["ckpt"], ["/b"]) == []
    found = model_pending.pending(models, ["ckpt", "glasses-2"], ["/var/lib/sdenv/model-bundle", "/other"])
    assert [entry["name"] for entry in found] == ["glasses-2"]
    assert found[0]["bundle_dir"] == "/var/lib/sdenv/model-bundle"


def test_the_closing_list_names_file_source_directory_and_commands():
    found = model_pending.pending([BY_HAND], ["glasses-2"], ["/var/lib/sdenv/model-bundle"])
    assert model_pending.closing_list(found) == [
        "1 model is still to fetch by hand; everything else is in place:",
        "glasses-2: download glasses-2.safetensors from https://civitai.com/ (search: Round glasses | Accessory)"
        " into the bundle directory /var/lib/sdenv/model-bundle, then run `make pin-models` (it shows name, size"
        " and SHA256) and `make pin-models CONFIRM=yes` (it records them).",
    ]
    assert model_pending.closing_list([]) == []
    two = model_pending.pending([BY_HAND, {**BY_HAND, "name": "b", "source": ""}], ["glasses-2", "b"], ["/d"])
    lines = model_pending.closing_list(two)
    assert lines[0].startswith("2 models are still to fetch by hand") and "from its source page" in lines[2]
