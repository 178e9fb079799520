"""webui_hash_cache: the legacy cache.json the WebUI imports while its cache/ directory does not exist."""

import json

import pytest
import webui_hash_cache as whc

from tests.unit.conftest import OTHER_UID, secret_unchanged

SHA = "1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c"
ADDNET = "e68952afd3de" + "0" * 52


def _entries():
    return [
        {
            "kind": "checkpoint",
            "relpath": "beautifulRealistic_v7.safetensors",
            "sha256": SHA,
            "mtime": 1732485000.123456,
        },
        {
            "kind": "lora",
            "relpath": "glasses-2.safetensors",
            "sha256": "b" * 64,
            "addnet_sha256": ADDNET,
            "mtime": 5.5,
        },
    ]


def test_seeds_the_titles_the_webui_looks_up(tmp_path):
    result = whc.seed(str(tmp_path), _entries())
    assert result["changed"] and result["skipped"] is None
    doc = json.loads((tmp_path / "cache.json").read_text())
    assert doc["hashes"]["checkpoint/beautifulRealistic_v7.safetensors"] == {
        "mtime": 1732485000.123456,
        "sha256": SHA,
    }
    # LoRA .safetensors: the kohya addnet hash, keyed by file stem (extensions-builtin/Lora/network.py).
    assert doc["hashes-addnet"]["lora/glasses-2"] == {"mtime": 5.5, "sha256": ADDNET}


def test_idempotent_and_keeps_other_entries(tmp_path):
    (tmp_path / "cache.json").write_text(
        json.dumps({"hashes": {"checkpoint/other.safetensors": {"mtime": 1, "sha256": "c" * 64}}})
    )
    assert whc.seed(str(tmp_path), _entries())["changed"] is True
    assert whc.seed(str(tmp_path), _entries())["changed"] is False
    doc = json.loads((tmp_path / "cache.json").read_text())
    assert "checkpoint/other.safetensors" in doc["hashes"]


def test_left_alone_once_the_webui_has_its_own_cache(tmp_path):
    (tmp_path / "cache").mkdir()
    result = whc.seed(str(tmp_path), _entries())
    assert result["changed"] is False and "cache/" in result["skipped"]
    assert not (tmp_path / "cache.json").exists()


def test_check_mode_writes_nothing(tmp_path):
    assert whc.seed(str(tmp_path), _entries(), check_mode=True)["changed"] is True
    assert not (tmp_path / "cache.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "xyz"}, "not 64 hex digits"),
        ({"mtime": "yesterday"}, "not a number"),
        ({"kind": "vae"}, "unknown model kind 'vae'"),
        ({"kind": "lora", "addnet_sha256": None}, "no addnet hash"),
    ],
)
def test_bad_entries(tmp_path, change, message):
    entry = {**_entries()[1], **change}
    with pytest.raises(whc.HashCacheError, match=message):
        whc.seed(str(tmp_path), [entry])


def test_damaged_cache_json_is_named(tmp_path):
    (tmp_path / "cache.json").write_text("{oops")
    with pytest.raises(whc.HashCacheError, match="is not readable JSON"):
        whc.seed(str(tmp_path), _entries())


def test_missing_webui_dir(tmp_path):
    with pytest.raises(whc.HashCacheError, match="does not exist"):
        whc.seed(str(tmp_path / "absent"), _entries())
    assert whc.seed(str(tmp_path / "absent"), _entries(), check_mode=True)["changed"] is False


def test_entries_from_model_file_results(tmp_path):
    dirs = {
        "checkpoint": str(tmp_path / "models" / "Stable-diffusion"),
        "lora": str(tmp_path / "models" / "Lora"),
    }
    installed = [
        {"dest": dirs["checkpoint"] + "/sub/bra.safetensors", "sha256": SHA, "mtime": 1.0, "changed": False},
        {
            "dest": dirs["lora"] + "/glasses-2.safetensors",
            "sha256": "b" * 64,
            "addnet_sha256": ADDNET,
            "mtime": 2.0,
        },
    ]
    entries = whc.entries_from_installed(installed, dirs)
    assert [(e["kind"], e["relpath"]) for e in entries] == [
        ("checkpoint", "sub/bra.safetensors"),
        ("lora", "glasses-2.safetensors"),
    ]
    whc.seed(str(tmp_path), entries)
    doc = json.loads((tmp_path / "cache.json").read_text())
    assert set(doc["hashes"]) == {"checkpoint/sub/bra.safetensors"} and set(doc["hashes-addnet"]) == {
        "lora/glasses-2"
    }
    with pytest.raises(whc.HashCacheError, match="none of the WebUI's model folders"):
        whc.entries_from_installed([{"dest": "/elsewhere/x.safetensors"}], dirs)


def test_a_cache_json_linked_to_a_root_only_file_is_refused_and_the_file_untouched(tmp_path, foreign, secret):
    webui = tmp_path / "webui"
    webui.mkdir()
    foreign(webui)
    (webui / "cache.json").symlink_to(secret)
    foreign(webui / "cache.json")
    with pytest.raises(
        whc.HashCacheError, match=r"cache.json is a symbolic link.*replace it with a regular file"
    ):
        whc.seed(str(webui), _entries(), uid=OTHER_UID, gid=OTHER_UID)
    assert secret_unchanged(secret)
    assert (webui / "cache.json").is_symlink() and sorted(p.name for p in webui.iterdir()) == ["cache.json"]


def test_a_webui_directory_that_is_a_link_is_refused(tmp_path, foreign):
    home = tmp_path / "home"
    home.mkdir()
    foreign(home)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (home / "webui").symlink_to(elsewhere)
    foreign(home / "webui")
    with pytest.raises(whc.HashCacheError, match="does not follow links"):
        whc.seed(str(home / "webui"), _entries())
    assert list(elsewhere.iterdir()) == []
