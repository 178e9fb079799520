"""The known-good snapshot and what the WebUI writes into its own tree as it runs (app_data, snapshotter's
same_environment): starting the app leaves a converged tree converged, a rollback keeps the app's own files,
and a change to anything the toolkit pins is still a change. The tree is shaped like a provisioned v1.10.1
one; what is written into it is what app_data.py names from upstream's code."""

import os
from pathlib import Path

import app_data
import pytest
import snapshot_store as ss
from snapshot_store import snapshotter


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    monkeypatch.setattr(snapshotter, "RACY_NS", 0)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def webui(tmp_path):
    """(store, tree, app_writes) for a provisioned tree and its first known-good snapshot."""
    tree = tmp_path / "stable-diffusion-webui"
    write(tree / "webui.py", "import modules\n")
    write(tree / "modules" / "processing.py", "def process_images(p): ...\n")
    write(
        tree / "modules" / "__pycache__" / "processing.cpython-310.pyc", "bytecode of the provision's --exit"
    )
    write(tree / "repositories" / "k-diffusion" / "k_diffusion" / "sampling.py", "def sample_euler(): ...\n")
    write(
        tree / "venv" / "lib" / "python3.10" / "site-packages" / "torch" / "__init__.py",
        "__version__ = '2.1.2'\n",
    )
    write(tree / "config.json", '{"sd_model_checkpoint": "guide.safetensors"}\n')
    write(tree / "ui-config.json", '{"txt2img/Width/value": 512}\n')
    write(tree / "cache.json", '{"hashes": {}}\n')  # the models role pre-seeds it
    write(tree / ".git" / "index", "DIRC staged entries")
    write(tree / "repositories" / "k-diffusion" / ".git" / "index", "DIRC staged entries")
    (tree / "models" / "Stable-diffusion").mkdir(parents=True)
    store = ss.Store(str(tmp_path / "store"))
    writes = {
        str(tree): {
            "kept": app_data.kept_paths(str(tree), ["outputs", "log"]),
            "restored": list(app_data.WEBUI_RESTORED),
        }
    }
    first = known_good(store, tree, writes)
    assert first["changed"] is True
    return store, tree, writes, first["id"]


def known_good(store, tree, writes):
    return store.snapshot(
        [str(tree)], "known-good", "known-good", True, only_if_changed=True, app_writes=writes
    )


def start_the_webui_api(tree):
    """What v1.10.1 writes when make verify LIVE=1 starts it with --nowebui and generates: bytecode beside
    every module it imports (the tree's, the sub-repositories', the venv's), extensions/ and the models'
    folders made empty, the hash cache and params.txt at the first generation, and outputs/ (the user's)."""
    write(tree / "__pycache__" / "webui.cpython-310.pyc", "bytecode")
    write(tree / "modules" / "__pycache__" / "processing.cpython-310.pyc", "bytecode, written again")
    write(
        tree / "repositories" / "k-diffusion" / "k_diffusion" / "__pycache__" / "sampling.cpython-310.pyc",
        "b",
    )
    write(
        tree / "venv" / "lib" / "python3.10" / "site-packages" / "torch" / "__pycache__" / "__init__.pyc", "b"
    )
    (tree / "extensions").mkdir()  # modules/extensions.py, at import
    (tree / "models" / "VAE-approx").mkdir()  # modelloader / sd_vae_approx
    (tree / "models" / "hypernetworks").mkdir()  # shared_init.initialize()
    write(tree / "cache" / "hashes" / "cache.db", "sqlite")  # modules/cache.py (diskcache)
    write(tree / "params.txt", "a cat\nSteps: 20, Sampler: Euler")  # processing.py
    write(tree / "outputs" / "txt2img-images" / "00000.png", "png")


def test_starting_the_app_leaves_the_known_good_snapshot_as_it_is(webui):
    store, tree, writes, first = webui
    start_the_webui_api(tree)
    write(tree / "styles.csv", "name,prompt\n")  # the user saved a style
    write(tree / "config_states" / "2026-12-07.json", "{}")  # the user backed up the extensions' state
    again = known_good(store, tree, writes)
    assert (again["changed"], again["id"]) == (False, first)
    assert [s["id"] for s in store.list()] == [first]


def test_without_the_apps_list_its_files_count_but_bytecode_and_new_empty_folders_do_not(webui):
    store, tree, _, _ = webui
    (tree / "extensions").mkdir()
    write(tree / "modules" / "__pycache__" / "processing.cpython-310.pyc", "bytecode, written again")
    assert known_good(store, tree, None)["changed"] is False
    write(tree / "params.txt", "a cat")
    assert known_good(store, tree, None)["changed"] is True


def test_the_settings_files_alone_take_a_fresher_copy_reported_unchanged(webui):
    store, tree, writes, first = webui
    start_the_webui_api(tree)
    # The user changes a setting the toolkit does not pin; the UI writes its components' defaults.
    write(tree / "config.json", '{"sd_model_checkpoint": "guide.safetensors", "jpeg_quality": 95}\n')
    write(tree / "ui-config.json", '{"txt2img/Width/value": 512, "txt2img/Width/minimum": 64}\n')
    again = known_good(store, tree, writes)
    assert again["changed"] is False and again["refreshed"] == first and again["id"] != first
    # The new one is what a rollback to the known-good puts back: the newest copy, not the older one.
    listing = store.read_tree_map(again["manifest"]["roots"][0]["tree"])
    assert listing["config.json"][5] == (tree / "config.json").stat().st_size
    # Taken once: the next provision finds the newest copy and takes none.
    third = known_good(store, tree, writes)
    assert (third["changed"], third["id"], "refreshed" in third) == (False, again["id"], False)
    assert len(store.list()) == 2


def test_a_git_index_written_again_with_the_same_bytes_is_no_change(webui):
    store, tree, writes, first = webui
    for index in (tree / ".git" / "index", tree / "repositories" / "k-diffusion" / ".git" / "index"):
        index.write_text("DIRC staged entries")  # git status refreshing its stat cache: same bytes, new mtime
        os.utime(index, ns=(index.stat().st_atime_ns, index.stat().st_mtime_ns + 5 * 10**9))
    assert known_good(store, tree, writes)["id"] == first
    (tree / ".git" / "index").write_text("DIRC other staged entries")  # what git stages changed
    assert known_good(store, tree, writes)["changed"] is True


@pytest.mark.parametrize(
    "change",
    [
        "a tracked file edited",
        "a sub-repository file edited",
        "a venv package added",
        "cache.json (the models role's)",
        "an extension installed",
        "a model folder removed",
        "a settings file and a tracked file",
    ],
)
def test_what_the_toolkit_pins_is_still_a_change(webui, change):
    store, tree, writes, first = webui
    start_the_webui_api(tree)
    if change == "a tracked file edited":
        write(tree / "modules" / "processing.py", "def process_images(p): return None\n")
    elif change == "a sub-repository file edited":
        write(
            tree / "repositories" / "k-diffusion" / "k_diffusion" / "sampling.py", "def sample_euler(): 1\n"
        )
    elif change == "a venv package added":
        write(tree / "venv" / "lib" / "python3.10" / "site-packages" / "xformers" / "__init__.py", "")
    elif change == "cache.json (the models role's)":
        write(tree / "cache.json", '{"hashes": {"checkpoint/guide": {}}}\n')
    elif change == "an extension installed":
        write(tree / "extensions" / "sd-webui-controlnet" / "install.py", "import launch\n")
    elif change == "a model folder removed":
        os.rmdir(tree / "models" / "Stable-diffusion")
    else:
        write(tree / "config.json", '{"sd_model_checkpoint": "other.safetensors"}\n')
        write(tree / "webui.py", "import modules  # edited\n")
    again = known_good(store, tree, writes)
    assert again["changed"] is True and "refreshed" not in again and again["id"] != first


def test_kept_paths_are_the_user_data_then_the_apps_own_files():
    assert app_data.kept_paths("/home/d/sd", ["outputs", "log", "params.txt"]) == [
        "outputs", "log", "params.txt", "styles.csv", "cache", "config_states",
    ]  # fmt: skip
    assert app_data.kept_paths(None, ["outputs"]) == []
    # What a rollback restores is never also kept (a tampered pinned key is what it repairs).
    assert not set(app_data.WEBUI_KEPT) & set(app_data.WEBUI_RESTORED)


def test_a_rollback_keeps_the_apps_own_files_and_restores_the_settings_files(webui):
    store, tree, writes, first = webui
    start_the_webui_api(tree)
    write(tree / "config.json", '{"sd_model_checkpoint": "tampered"}\n')
    keep = [os.path.join(tree, rel) for rel in writes[str(tree)]["kept"]]
    store.rollback(first, keep=keep)
    assert (tree / "params.txt").read_text().startswith("a cat")
    assert (tree / "cache" / "hashes" / "cache.db").is_file()
    assert (tree / "outputs" / "txt2img-images" / "00000.png").is_file()
    assert Path(tree / "config.json").read_text() == '{"sd_model_checkpoint": "guide.safetensors"}\n'
    assert not (tree / "__pycache__").exists()  # bytecode: put back with the sources, or removed
