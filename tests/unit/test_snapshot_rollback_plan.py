"""A rollback's plan and words: the user's work (outputs/, log/) is kept unless named, the plan is counted
per top-level directory with bytes, labels resolve to snapshots, the list is an aligned table."""

import json
import os
import re
import time
from pathlib import Path

import pytest
import snapshot_store as ss
from snapshot_fixtures import tree_state
from snapshot_store import report, snapshotter


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    # Files made by a test are seconds old at most; with the racy window at 0 the stat cache is exercised.
    monkeypatch.setattr(snapshotter, "RACY_NS", 0)


@pytest.fixture
def webui(tmp_path):
    live = tmp_path / "webui"
    for d in ("venv/lib", "models", "outputs/txt2img-images", "log"):
        (live / d).mkdir(parents=True)
    for i in range(20):
        (live / "venv" / "lib" / f"m{i}.py").write_text(f"x = {i}\n")
    (live / "launch.py").write_text("print('launch')\n")
    (live / "models" / "m.safetensors").write_bytes(b"m" * 5000)
    (live / "outputs" / "txt2img-images" / "old.png").write_bytes(b"o" * 300)
    (live / "log" / "images.csv").write_text("a,b\n")
    store = ss.Store(str(tmp_path / "store"))
    keep = [str(live / "outputs"), str(live / "log")]
    return store, live, keep


def user_work(live):
    """What a user does after the snapshot: a new image, an edited log, a deleted image."""
    (live / "outputs" / "txt2img-images" / "new.png").write_bytes(b"n" * 1234)
    (live / "log" / "images.csv").write_text("a,b\nc,d\n")


def breakage(live):
    """What a bad upgrade does: files changed, added and deleted in the venv, a new top-level directory."""
    (live / "venv" / "lib" / "m1.py").write_text("broken = True\n")  # 14 bytes now, 6 in the snapshot
    (live / "venv" / "lib" / "m2.py").unlink()
    (live / "venv" / "lib" / "new.py").write_text("new\n")
    (live / "repositories" / "x").mkdir(parents=True)
    (live / "repositories" / "x" / "y.py").write_text("y" * 100)


def _fresh_tree(tmp_path, live):
    """The tree a walk with no stat cache records for live now."""
    fresh = ss.Store(str(tmp_path / f"fresh-{time.monotonic_ns()}"))
    return fresh.snapshot([str(live)])["manifest"]["roots"][0]["tree"]


def test_a_rollback_keeps_the_users_outputs_and_logs_and_says_so(webui, tmp_path):
    store, live, keep = webui
    base = store.snapshot([str(live)], label="base")
    base_venv = tree_state(live / "venv")
    user_work(live)
    work = {p: tree_state(live / p) for p in ("outputs", "log")}
    breakage(live)
    res = store.rollback("base", keep=keep)
    assert tree_state(live / "venv") == base_venv and not (live / "repositories").exists()
    assert {p: tree_state(live / p) for p in ("outputs", "log")} == work, "the user's work was rolled back"
    kept = res["plan"][str(live)]["kept"]
    assert kept["outputs"] == {"added": [1, 1234], "changed": [0, 0], "deleted": [0, 0]}
    assert kept["log"] == {"added": [0, 0], "changed": [1, 8], "deleted": [0, 0]}
    words = report.result_lines(res, store.load_manifest(base["id"]))
    assert (
        f"Kept as it is (user data, not rolled back; name it in PATHS= to roll it back): {live}/outputs: 1 file new (1.2 KiB) since the snapshot."
        in words
    )
    assert f"{live}/log: 1 file changed (8 B) since the snapshot." in words[2]
    # What the rollback recorded for the next snapshot is what a walk finds, kept files included.
    after = store.snapshot([str(live)])
    assert after["manifest"]["stats"]["read_files"] == 0
    assert after["manifest"]["roots"][0]["tree"] == _fresh_tree(tmp_path, live)
    assert store.check(deep=True)["ok"]


def test_paths_naming_the_users_work_rolls_it_back_naming_the_root_does_not(webui):
    store, live, keep = webui
    store.snapshot([str(live)], label="base")
    user_work(live)
    res = store.rollback("base", [str(live)], keep=keep)
    assert (live / "outputs" / "txt2img-images" / "new.png").exists(), (
        "naming the WebUI tree is not naming outputs/"
    )
    assert set(res["plan"][str(live)]["kept"]) == {"outputs", "log"}
    res = store.rollback("base", [str(live / "venv")], keep=keep)
    assert res["plan"][str(live)]["kept"] == {}, "what PATHS= does not reach is not reported as kept"
    res = store.rollback("base", [str(live / "outputs" / "txt2img-images")], keep=keep)
    assert not (live / "outputs" / "txt2img-images" / "new.png").exists()
    assert res["plan"][str(live)]["kept"] == {}  # log/ is kept too, but PATHS= did not reach it
    assert (live / "log" / "images.csv").read_text() == "a,b\nc,d\n"
    store.rollback("base", [str(live / "log")], keep=keep)
    assert (live / "log" / "images.csv").read_text() == "a,b\n"


def test_without_keep_a_rollback_restores_everything(webui):
    store, live, _ = webui
    store.snapshot([str(live)])
    user_work(live)
    res = store.rollback("latest")
    assert not (live / "outputs" / "txt2img-images" / "new.png").exists()
    assert res["plan"][str(live)]["kept"] == {}


def test_the_plan_counts_files_and_bytes_per_top_level_directory_and_changes_nothing(webui):
    store, live, keep = webui
    zprofile = live.parent / "zprofile"
    zprofile.write_text("eval\n")
    base = store.snapshot([str(live), str(zprofile)], label="base")
    user_work(live)
    breakage(live)
    (live / "launch.py").write_text("print('changed launch')\n")
    zprofile.write_text("broken\n")
    before = tree_state(live.parent)
    res = store.rollback("base", dry_run=True, keep=keep)
    assert tree_state(live.parent) == before and len(store.list()) == 1
    groups = res["plan"][str(live)]["groups"]
    # m1.py replaced (the snapshot's 6 bytes), m2.py added back, new.py deleted (its live 4 bytes)
    assert (groups["venv"]["replace"], groups["venv"]["add"], groups["venv"]["delete"]) == (
        [1, 6],
        [1, 6],
        [1, 4],
    )
    assert res["plan"][str(live)]["write"] == 3  # m1.py, m2.py, launch.py
    assert groups["repositories"]["delete"] == [1, 100] and groups["repositories"]["dirs_delete"] == 2
    assert groups["."]["replace"] == [1, 16]
    assert "outputs" not in groups and "log" not in groups
    lines = report.plan_text(res["plan"], store.load_manifest(base["id"]))
    assert lines[0] == f"Rollback plan, to snapshot {base['id']} (label base, {base['manifest']['time']}):"
    assert lines[1:] == [
        f"  {live} (the files directly in it): replace 1 file (16 B).",
        f"  {live}/repositories/: delete 1 file (100 B), remove 2 directories.",
        f"  {live}/venv/: replace 1 file (6 B), add 1 file (6 B), delete 1 file (4 B).",
        f"  {zprofile}: replace 1 file (5 B).",
        f"  Kept as it is (user data, not rolled back; name it in PATHS= to roll it back): {live}/outputs: 1 file new (1.2 KiB) since the snapshot.",
        f"  Kept as it is (user data, not rolled back; name it in PATHS= to roll it back): {live}/log: 1 file changed (8 B) since the snapshot.",
    ]


def test_the_result_is_sentences_with_the_undo_id_and_command(webui):
    store, live, keep = webui
    base = store.snapshot([str(live)], label="base")
    breakage(live)
    res = store.rollback("base", keep=keep)
    words = report.result_lines(res, store.load_manifest(base["id"]))
    assert words[0] == (
        f"Rolled back to snapshot {base['id']} (label base, {base['manifest']['time']}): replaced 1 file (6 B), "
        "added 1 file (6 B), deleted 2 files (104 B)."
    )
    assert words[-1] == (
        f"The state before this rollback is snapshot {res['before']} (label before-rollback); to go back to it: "
        f"make rollback TO={res['before']}"
    )
    assert not any("{" in w for w in words)
    undo = store.rollback(res["before"], keep=keep)
    assert undo["changed"] and (live / "repositories" / "x" / "y.py").exists()
    again = report.result_lines(store.rollback(res["before"], keep=keep), store.load_manifest(res["before"]))
    assert again[0].startswith("Nothing to roll back: everything already matches snapshot")


def test_a_label_names_its_newest_snapshot_and_says_so_when_it_names_several(webui):
    store, live, _ = webui
    first = store.snapshot([str(live)], label="first")["id"]
    (live / "launch.py").write_text("2\n")
    other = store.snapshot([str(live)], label="other_one")["id"]
    assert store.resolve_ref("first") == (first, "")
    assert store.resolve_ref("other_one") == (other, "")
    assert store.resolve_ref("latest") == (other, "")
    assert store.resolve(first[:-2]) == first  # a unique start of the id (two ids may share their first 18)
    (live / "launch.py").write_text("3\n")
    second = store.snapshot([str(live)], label="first")["id"]
    got, note = store.resolve_ref("first")
    assert got == second
    assert note == (
        f"The label 'first' names 2 snapshots ({first}, {second}): the newest, {second}, is used (give an id to "
        "choose another)."
    )
    assert store.rollback("other_one")["target"] == other and (live / "launch.py").read_text() == "2\n"


def test_an_unknown_label_is_refused_naming_what_exists(webui):
    store, live, _ = webui
    store.snapshot([str(live)], label="base")
    newest = store.snapshot([str(live)], label="after-upgrade")["id"]
    with pytest.raises(ss.SnapshotError) as e:
        store.resolve("frist")
    assert str(e.value) == (
        f"There is no snapshot 'frist' in {store.path} (no id or label matches): the labels there are "
        f"after-upgrade, base; the newest id is {newest} (make snapshots lists all 2); or use latest."
    )
    with pytest.raises(ss.SnapshotError, match="is not a snapshot id or label"):
        store.resolve("a b")


def test_the_snapshot_list_is_a_table_whose_header_and_rows_have_the_same_columns(webui):
    store, live, _ = webui
    store.snapshot([str(live)], label="base")
    (live / "models" / "big.safetensors").write_bytes(b"b" * (3 << 20))
    store.snapshot([str(live)])
    store.rollback("base")
    lines = report.snapshot_table(store.list())
    assert len(lines) == 4
    cells = [re.split(r" {2,}", ln) for ln in lines]
    assert {len(c) for c in cells} == {8}, lines
    assert cells[0] == ["id", "time", "kind", "label", "files", "size", "new", "pinned"]
    assert [c[2:4] for c in cells[1:]] == [
        ["manual", "base"],
        ["manual", "-"],
        ["before-rollback", "before-rollback"],
    ]
    # Aligned: each left column starts, each number column ends, at the same offset on every line. The
    # spans are the cells' own (runs of text between gaps of two or more spaces), never a search for a
    # cell's text, which could match inside an earlier cell (a "-" label in the time's date).
    spans = [[m.span() for m in re.finditer(r"\S+(?: \S+)*", ln)] for ln in lines]
    for i, name in enumerate(cells[0]):
        edge = 1 if name in ("files", "size", "new") else 0
        offsets = {row[i][edge] for row in spans}
        assert len(offsets) == 1, (name, lines)
    assert cells[2][5] == "3.0 MiB" and cells[1][7] == "no"


@pytest.mark.parametrize(
    "n, words",
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (10 << 20, "10 MiB"), (5 * 2**40 // 2, "2.5 TiB")],
)
def test_human_bytes(n, words):
    assert report.human_bytes(n) == words


def test_a_root_absent_in_the_snapshot_keeps_the_users_folders_and_the_directories_holding_them(tmp_path):
    # ComfyUI's tree is new since the snapshot (recorded absent): the rollback removes what the app's install
    # made, never the user's output/ and user/ (nor the tree's own directory that holds them).
    store = ss.Store(str(tmp_path / "store"))
    live = tmp_path / "ComfyUI"
    base = store.snapshot([str(live)], label="before-comfyui")["id"]
    for d in ("comfy", "output", "user/default/workflows", "custom_nodes"):
        (live / d).mkdir(parents=True)
    (live / "main.py").write_text("print('main')\n")
    (live / "comfy" / "sd.py").write_text("sd\n")
    (live / "output" / "ComfyUI_00001_.png").write_bytes(b"p" * 777)
    (live / "user" / "default" / "workflows" / "mine.json").write_text('{"nodes": []}')
    kept = [str(live / d) for d in ("output", "input", "user")]
    work = {d: tree_state(live / d) for d in ("output", "user")}
    plan = store.rollback(base, dry_run=True, keep=kept)["plan"][str(live)]
    assert "remove ." not in plan["examples"] and plan["groups"].get(".", {}).get("dirs_delete", 0) == 0, plan
    res = store.rollback(base, keep=kept)
    assert {d: tree_state(live / d) for d in ("output", "user")} == work, "the user's work was deleted"
    assert sorted(os.listdir(live)) == ["output", "user"], "what the install made is removed"
    assert set(res["plan"][str(live)]["kept"]) == {"output", "user"}
    # Without kept paths the same rollback takes the whole tree away, as before.
    store.rollback(res["before"], keep=kept)
    assert (live / "main.py").exists()
    store.rollback(base)
    assert not live.exists()


def test_a_store_from_before_labels_and_user_data_still_rolls_back(webui):
    # Nothing about the on-disk format changed: a manifest without a label resolves by id and rolls back.
    store, live, keep = webui
    snap = store.snapshot([str(live)])
    path = Path(store.path, "snapshots", snap["id"] + ".json")
    manifest = json.loads(path.read_text())
    del manifest["label"]
    os.chmod(path, 0o644)
    path.write_text(json.dumps(manifest))
    breakage(live)
    assert store.rollback(snap["id"][:20], keep=keep)["changed"]
    assert not (live / "repositories").exists()
