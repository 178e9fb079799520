"""The one model store: its layout (module_utils/model_store.py), the Jinja filters made from it, the fixture
WebUI reading it through the same flags as v1.10.1, and the verified move of models out of the WebUI tree
(module_utils/model_store_move.py)."""

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fake_webui_api
import model_fastpath
import model_store
import model_store_move
import pytest
import stat_cache
from model_fixtures import random_safetensors

ROOT = Path(__file__).resolve().parents[2]
WEBUI_TREE = ROOT / "tests" / "fixtures" / "webui_tree"


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --- layout -----------------------------------------------------------------------------------------------


def test_each_kind_has_comfyuis_folder_name_in_the_store():
    assert model_store.kind_dirs("/h/sd-models") == {
        "checkpoint": "/h/sd-models/checkpoints",
        "lora": "/h/sd-models/loras",
    }
    assert model_store.store_path("/s", "lora", "g.safetensors") == "/s/loras/g.safetensors"
    with pytest.raises(model_store.StoreLayoutError, match="unknown model kind 'vae'"):
        model_store.kind_dir("/s", "vae")


def test_the_webui_gets_its_own_flags_for_the_store():
    assert model_store.webui_args("/s") == ["--ckpt-dir", "/s/checkpoints", "--lora-dir", "/s/loras"]
    assert model_store.webui_kind_dirs("/w") == {
        "checkpoint": "/w/models/Stable-diffusion",
        "lora": "/w/models/Lora",
    }


def test_snapshots_name_the_stores_models_from_the_same_folders():
    from snapshot_store import format as snapshot_format

    assert set(snapshot_format.MODEL_DIRS) == {"models/"} | {d + "/" for d in model_store.KIND_DIRS.values()}


def test_the_jinja_filters_are_the_same_mapping():
    spec = importlib.util.spec_from_file_location(
        "layout_filter", ROOT / "plugins/filter/model_store_layout.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters = module.FilterModule().filters()
    assert filters["sdenv_store_dirs"]("/s") == model_store.kind_dirs("/s")
    assert filters["sdenv_store_webui_args"]("/s") == model_store.webui_args("/s")


# --- the fixture WebUI reads the flags as v1.10.1 does ------------------------------------------------------


def server_options(tmp_path, commandline_args):
    """The fixture WebUI server's parsed options for COMMANDLINE_ARGS (a copy of the tree, run as webui.sh runs
    it: the tree first on sys.path)."""
    tree = tmp_path / "tree"
    shutil.copytree(WEBUI_TREE, tree)
    code = "import json; from modules.shared_cmd_options import cmd_opts; print(json.dumps(vars(cmd_opts)))"
    env = {"PATH": os.environ["PATH"], "COMMANDLINE_ARGS": commandline_args}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    return done, tree


def test_the_fixture_server_takes_the_store_flags_and_refuses_a_wrong_one(tmp_path):
    done, tree = server_options(tmp_path, "--api " + " ".join(model_store.webui_args("/s")))
    assert done.returncode == 0, done.stderr
    opts = json.loads(done.stdout)
    assert (opts["ckpt_dir"], opts["lora_dir"]) == ("/s/checkpoints", "/s/loras")
    # Without the flag, models/Lora under the tree, as extensions-builtin/Lora/preload.py defaults it.
    shutil.rmtree(tree)
    done, tree = server_options(tmp_path, "--api")
    assert json.loads(done.stdout)["lora_dir"] == str(tree / "models" / "Lora")
    shutil.rmtree(tree)
    done, _ = server_options(tmp_path, "--api --lora-dirs /s/loras")  # upstream's parser knows no such flag
    assert done.returncode == 2 and "unrecognized arguments: --lora-dirs" in done.stderr


def test_the_fixture_lists_the_store_and_a_copy_left_in_the_tree_wins(tmp_path):
    store, models = tmp_path / "sd-models", tmp_path / "webui" / "models"
    (store / "checkpoints").mkdir(parents=True)
    (store / "loras").mkdir()
    (store / "checkpoints" / "ckpt.safetensors").write_bytes(b"x")
    (store / "loras" / "glasses.safetensors").write_bytes(b"y")
    app = fake_webui_api.FakeWebUI(
        str(models),
        ckpt_dir=str(store / "checkpoints"),
        lora_dirs=[str(store / "loras"), str(models / "LyCORIS")],
    )
    assert [(c["title"], c["filename"]) for c in app.checkpoints()] == [
        ("ckpt.safetensors", str(store / "checkpoints" / "ckpt.safetensors"))
    ]
    assert [lora["name"] for lora in app.loras()] == ["glasses"]
    # A LoRA left in models/Lora is not read once --lora-dir names the store; a checkpoint left in
    # models/Stable-diffusion still is, under the same title, and replaces the store's.
    (models / "Lora").mkdir()
    (models / "Lora" / "old.safetensors").write_bytes(b"z")
    (models / "Stable-diffusion" / "ckpt.safetensors").write_bytes(b"x")
    assert [lora["name"] for lora in app.loras()] == ["glasses"]
    assert [c["filename"] for c in app.checkpoints()] == [
        str(models / "Stable-diffusion" / "ckpt.safetensors")
    ]


# --- the verified move ----------------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path):
    ckpt = random_safetensors(300_000, seed=1)
    lora = random_safetensors(20_000, seed=2)
    home = tmp_path / "home"
    webui = home / "webui"
    store = home / "sd-models"
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    (webui / "models" / "Lora").mkdir(parents=True)
    models = [
        {"name": "c", "kind": "checkpoint", "file": "c.safetensors", "sha256": sha(ckpt)},
        {"name": "l", "kind": "lora", "file": "l.safetensors", "sha256": sha(lora)},
    ]
    return {
        "home": home,
        "webui": webui,
        "store": store,
        "cache": tmp_path / "stat-cache.json",
        "models": models,
        "bytes": {"c": ckpt, "l": lora},
        "legacy": {
            "c": webui / "models/Stable-diffusion/c.safetensors",
            "l": webui / "models/Lora/l.safetensors",
        },
        "dest": {"c": store / "checkpoints/c.safetensors", "l": store / "loras/l.safetensors"},
    }


def mover(lay):
    for folder in model_store.kind_dirs(str(lay["store"])).values():
        os.makedirs(folder, exist_ok=True)
    return model_store_move.StoreMover(str(lay["store"]), str(lay["webui"]), lay["models"], str(lay["cache"]))


def tree_state(*roots):
    return {
        str(p): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(Path(root).rglob("*"))
    }


def test_models_in_the_webui_tree_move_into_the_store_verified_and_vouched_for(layout):
    for key in ("c", "l"):
        layout["legacy"][key].write_bytes(layout["bytes"][key])
    mtime = layout["legacy"]["c"].stat().st_mtime_ns
    m = mover(layout)
    steps = m.plan()
    assert [s.action for s in steps] == ["move", "move"]
    assert all("SHA256 checked, no download" in line for line in model_store_move.lines(steps))
    m.apply(steps)
    for key in ("c", "l"):
        assert not layout["legacy"][key].exists()
        assert layout["dest"][key].read_bytes() == layout["bytes"][key]
    # The mtime is kept (the WebUI's hash cache trusts an entry while the file is not newer).
    assert layout["dest"]["c"].stat().st_mtime_ns == mtime
    # model_file's fast path accepts the moved files without reading them (the LoRA's addnet hash too).
    for model, key in zip(layout["models"], ("c", "l")):
        settled = model_fastpath.settled_result(
            str(layout["dest"][key]), model["sha256"], stat_cache=str(layout["cache"]), addnet=key == "l"
        )
        assert settled and settled["verified_by"] == "stat-cache"
    # A second plan has nothing to do.
    assert model_store_move.lines(mover(layout).plan()) == []


def test_a_move_across_filesystems_copies_then_hashes_the_copy(layout, monkeypatch):
    layout["legacy"]["c"].write_bytes(layout["bytes"]["c"])
    real_link, calls = os.link, []

    def cross_device(src, dst, **kw):
        calls.append(src)
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, **kw)

    monkeypatch.setattr(model_store_move.os, "link", cross_device)
    m = mover(layout)
    m.apply(m.plan())
    assert layout["dest"]["c"].read_bytes() == layout["bytes"]["c"]
    assert not layout["legacy"]["c"].exists()
    assert [p.name for p in layout["dest"]["c"].parent.iterdir()] == ["c.safetensors"]  # no temp left


def test_a_copy_left_in_the_webui_tree_is_removed_once_it_is_the_locks(layout):
    for where in ("legacy", "dest"):
        layout[where]["c"].parent.mkdir(parents=True, exist_ok=True)
        layout[where]["c"].write_bytes(layout["bytes"]["c"])
    m = mover(layout)
    steps = m.plan()
    assert [s.action for s in steps] == ["drop", "keep"]  # the store's copy is adopted (hashed) first
    m.apply(steps)
    assert not layout["legacy"]["c"].exists() and layout["dest"]["c"].is_file()


def test_a_users_file_with_other_bytes_in_the_store_is_refused_and_nothing_changes(layout):
    layout["dest"]["c"].parent.mkdir(parents=True)
    layout["dest"]["c"].write_bytes(b"my own fine-tune")
    layout["legacy"]["l"].write_bytes(layout["bytes"]["l"])  # would move, but the run stops first
    m = mover(layout)
    before = tree_state(layout["home"])
    with pytest.raises(
        model_store_move.StoreError, match=r"holds other bytes than model c of the lock .* did not put"
    ):
        m.plan()
    assert tree_state(layout["home"]) == before


def test_a_file_with_other_bytes_in_the_webui_tree_is_refused(layout):
    layout["legacy"]["c"].write_bytes(b"not the lock's")
    with pytest.raises(model_store_move.StoreError, match="the WebUI would list it beside the store's copy"):
        mover(layout).plan()
    assert layout["legacy"]["c"].read_bytes() == b"not the lock's"


def test_a_store_file_the_toolkit_installed_is_left_to_model_file(layout):
    """One the stat cache knows (even with an older pin) is the toolkit's: model_file replaces it, unasked."""
    layout["dest"]["c"].parent.mkdir(parents=True)
    layout["dest"]["c"].write_bytes(b"an older version")
    cache = stat_cache.StatCache(str(layout["cache"]))
    cache.record(str(layout["dest"]["c"]), layout["dest"]["c"].stat(), "0" * 64)
    cache.save()
    assert [s.action for s in mover(layout).plan()] == ["keep", "keep"]


def test_a_link_at_a_models_place_is_refused_not_followed(layout, tmp_path):
    target = tmp_path / "elsewhere.safetensors"
    target.write_bytes(layout["bytes"]["c"])
    layout["legacy"]["c"].symlink_to(target)
    with pytest.raises(model_store_move.StoreError, match="is not a regular file"):
        mover(layout).plan()
    assert target.read_bytes() == layout["bytes"]["c"]


def test_a_legacy_file_swapped_after_the_plan_is_not_moved(layout):
    layout["legacy"]["c"].write_bytes(layout["bytes"]["c"])
    m = mover(layout)
    steps = m.plan()
    layout["legacy"]["c"].unlink()
    layout["legacy"]["c"].write_bytes(b"swapped in")
    with pytest.raises(model_store_move.StoreError, match="changed while the toolkit was moving it"):
        m.apply(steps)
    assert layout["legacy"]["c"].read_bytes() == b"swapped in"
    assert not layout["dest"]["c"].exists()


# --- snapshots and rollback across the move -------------------------------------------------------------------


def test_a_snapshot_of_the_store_names_its_models_by_sha256(layout, tmp_path):
    import snapshot_store

    for key in ("c", "l"):
        layout["dest"][key].parent.mkdir(parents=True, exist_ok=True)
        layout["dest"][key].write_bytes(layout["bytes"][key])
    (layout["store"] / "checkpoints" / "notes.txt").write_text("not a model")
    snaps = snapshot_store.Store(str(tmp_path / "snapshots"))
    facts = snaps.snapshot([str(layout["store"])])["manifest"]["facts"]["models"]
    assert facts == {str(layout["dest"][k]): sha(layout["bytes"][k]) for k in ("c", "l")}


def test_an_older_snapshot_still_rolls_back_and_the_next_move_drops_its_copies(layout, tmp_path):
    """A snapshot taken before the store (the WebUI tree its only root, the models in it) brings that layout
    back whole, leaving the store (not one of its roots) as it is; the next provision then finds the same
    bytes in both places and removes the tree's copies, without a download. A newer snapshot brings both."""
    import snapshot_store

    for key in ("c", "l"):
        layout["legacy"][key].write_bytes(layout["bytes"][key])
    snaps = snapshot_store.Store(str(tmp_path / "snapshots"))
    older = snaps.snapshot([str(layout["webui"])])["id"]
    m = mover(layout)
    m.apply(m.plan())
    newer = snaps.snapshot([str(layout["webui"]), str(layout["store"])])["id"]
    after_move = tree_state(layout["home"])

    snaps.rollback(older)
    for key in ("c", "l"):
        assert layout["legacy"][key].read_bytes() == layout["bytes"][key]
        assert layout["dest"][key].read_bytes() == layout["bytes"][key]

    steps = mover(layout).plan()
    assert [s.action for s in steps] == ["drop", "drop"]
    mover(layout).apply(steps)
    assert not any(layout["legacy"][k].exists() for k in ("c", "l"))
    assert all(layout["dest"][k].read_bytes() == layout["bytes"][k] for k in ("c", "l"))

    snaps.rollback(newer)
    assert {p: v[0] for p, v in tree_state(layout["home"]).items()} == {
        p: v[0] for p, v in after_move.items()
    }


# --- make bench BENCH=models: the store's disk figure --------------------------------------------------------


def test_the_bench_counts_each_model_once_and_the_move_adds_no_copy(tmp_path):
    from tests.bench import bench_models

    a = tmp_path / "a"
    a.mkdir()
    (a / "m.safetensors").write_bytes(os.urandom(1 << 16))
    (a / "notes.txt").write_bytes(os.urandom(1 << 16))  # not a model
    one = bench_models.models_disk(a)
    assert one >= 1 << 16
    b = tmp_path / "b"
    b.mkdir()
    os.link(a / "m.safetensors", b / "m.safetensors")
    assert bench_models.models_disk(a, b) == one  # a second name for the same bytes is no second copy
    (b / "m.safetensors").unlink()
    shutil.copyfile(a / "m.safetensors", b / "m.safetensors")
    assert bench_models.models_disk(a, b) == 2 * one

    data = random_safetensors(200_000, seed=3)
    present = tmp_path / "present.safetensors"
    present.write_bytes(data)
    work = tmp_path / "work"
    work.mkdir()
    moved = bench_models.bench_store_move(work, present, sha(data))
    assert moved["after"] == moved["before"] > 0 and moved["in_webui"] == 0
