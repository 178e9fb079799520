"""The pure parts of `make bench BENCH=models`' second-app figures (tests/bench/second_app.py): the disk
measure (du, a hard-linked model counted once), which paths hold an account's models, and the two rows'
ratios against their targets. The run itself (two provisioned fixture accounts) is the bench."""

import os

from tests.bench import second_app as bench


def test_disk_used_counts_a_model_two_apps_see_once(tmp_path):
    store, tree = tmp_path / "store", tmp_path / "tree"
    store.mkdir()
    tree.mkdir()
    (store / "m.safetensors").write_bytes(os.urandom(256 * 1024))
    alone = bench.disk_used([store])
    assert alone >= 256 * 1024
    os.link(store / "m.safetensors", tree / "m.safetensors")
    assert bench.disk_used([store, tree]) - alone < 64 * 1024, "a hard link was counted as a second copy"
    (tree / "copy.safetensors").write_bytes((store / "m.safetensors").read_bytes())
    assert bench.disk_used([store, tree]) - alone >= 256 * 1024, "a real copy must count"
    assert bench.disk_used([tmp_path / "absent"]) == 0
    assert bench.disk_used([store, tmp_path / "absent"]) == bench.disk_used([store])


def test_model_paths_name_the_store_and_each_apps_own_places(tmp_path):
    assert bench.model_paths(tmp_path, with_comfyui=False) == [
        tmp_path / "sd-models",
        tmp_path / "stable-diffusion-webui" / "models",
    ]
    assert bench.model_paths(tmp_path, with_comfyui=True)[2:] == [
        tmp_path / "ComfyUI" / "models",
        tmp_path / "ComfyUI" / "extra_model_paths.yaml",
    ]


def figures(**changes):
    base = {"before": 1 << 30, "after": (1 << 30) + 8192, "trees_before": 1 << 31, "trees_after": 1 << 32,
            "comfyui_tree": 1 << 31, "models": 1 << 30, "webui": 4.0, "both": 4.4}  # fmt: skip
    return {**base, **changes}


def test_the_rows_hold_each_figure_to_its_target():
    disk, rerun = bench.rows(figures())
    assert disk[3] == "+0.0008% of the models' size" and disk[5] is True
    assert rerun[3] == "1.10x the WebUI alone" and rerun[5] is True
    # A second copy of the models (ComfyUI with its own checkpoints) misses; so does a re-run 1.3x as long.
    disk, rerun = bench.rows(figures(after=(1 << 31) + 8192, both=5.2))
    assert disk[3] == "+100.0008% of the models' size" and disk[5] is False
    assert rerun[3] == "1.30x the WebUI alone" and rerun[5] is False
    # Exactly on the targets still meets them.
    disk, rerun = bench.rows(figures(after=(1 << 30) + (1 << 30) // 100, both=4.8))
    assert disk[5] is True and rerun[5] is True
