"""model_lock_edit: pinning touches only the entry's sha256 and size lines; comments survive."""

import model_lock_edit as le
import pytest
import yaml

LOCK = """---
# The pins.
sdenv_lock:
  webui:
    commit: 82a973c04367123ae98bd9abdf80d9eda9b910e2
  # --- Models (role models) ---
  models:
    - name: bra
      kind: checkpoint
      sha256: 1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c
      size: null
    # The LoRA: nothing published.
    - name: glasses-2
      kind: lora
      file: glasses-2.safetensors
      urls: []
      sha256: null  # none published
      size: null
      trigger_words: [glasses, round eyewear]
    - name: "quoted"
      kind: lora
  other: 1
"""

SHA = "ab" * 32


def test_pins_only_the_two_lines():
    after = le.pin(LOCK, "glasses-2", SHA, 123, "pinned by make pin-models 2026-11-24 from http://x/y")
    changed = [(a, b) for a, b in zip(LOCK.splitlines(), after.splitlines()) if a != b]
    assert changed == [
        (
            "      sha256: null  # none published",
            f"      sha256: {SHA}  # pinned by make pin-models 2026-11-24 from http://x/y",
        ),
        ("      size: null", "      size: 123"),
    ]
    doc = yaml.safe_load(after)
    entry = next(m for m in doc["sdenv_lock"]["models"] if m["name"] == "glasses-2")
    assert entry["sha256"] == SHA and entry["size"] == 123
    assert doc["sdenv_lock"]["models"][0]["size"] is None  # the other entry is untouched
    assert "# The LoRA: nothing published." in after


def test_missing_keys_are_added_inside_the_entry():
    after = le.pin(LOCK, "quoted", SHA, 7, "n")
    doc = yaml.safe_load(after)
    entry = doc["sdenv_lock"]["models"][2]
    assert entry == {"name": "quoted", "kind": "lora", "sha256": SHA, "size": 7}
    assert doc["sdenv_lock"]["other"] == 1


def test_repinning_is_stable():
    once = le.pin(LOCK, "glasses-2", SHA, 123, "n")
    assert le.pin(once, "glasses-2", SHA, 123, "n") == once


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", SHA, 1, "n"), "no model named 'nope'"),
        (("glasses-2", "xyz", 1, "n"), "is not a SHA256"),
        (("glasses-2", SHA, -1, "n"), "is not a size in bytes"),
        (("glasses-2", SHA, 1, "a\nb"), "one line"),
    ],
)
def test_refusals(args, message):
    with pytest.raises(le.LockEditError, match=message):
        le.pin(LOCK, *args)


def test_no_models_list():
    with pytest.raises(le.LockEditError, match="no `models:` list"):
        le.pin("sdenv_lock:\n  webui: {}\n", "x", SHA, 1, "n")
