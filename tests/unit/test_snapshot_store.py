"""The snapshot store: round trip, stat cache, packing, crash order, check, prune, locking, bad input."""

import hashlib
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
import snapshot_store as ss
from snapshot_fixtures import tree_state
from snapshot_store import fileio, snapshotter
from snapshot_store import format as fmt


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    # Files made by a test are seconds old at most; with the racy window at 0 the stat cache is exercised.
    monkeypatch.setattr(snapshotter, "RACY_NS", 0)


@pytest.fixture(autouse=True, params=["serial walk", "split walk"])
def walk_split(request, monkeypatch):
    # Every test runs with the walk in one process and split with a forked child (which big trees get).
    monkeypatch.setattr(snapshotter, "SPLIT_MIN_LINES", 10**9 if request.param == "serial walk" else 2)
    return request.param


state = tree_state


@pytest.fixture
def env(tmp_path):
    live = tmp_path / "live"
    (live / "venv" / "lib").mkdir(parents=True)
    (live / "models" / "Lora").mkdir(parents=True)
    (live / "empty").mkdir()
    for i in range(300):
        (live / "venv" / "lib" / f"m{i}.py").write_text(f"print({i})\n" * (i % 7 + 1))
    (live / "models" / "big.safetensors").write_bytes(os.urandom(ss.LARGE + 12345))
    (live / "models" / "Lora" / "small.safetensors").write_bytes(b"lora" * 10)
    (live / "zero").write_bytes(b"")
    os.symlink("../zero", live / "venv" / "link")
    os.symlink("/etc", live / "outside")
    (live / "odd\tname\nwith\\").write_text("odd")
    (live / os.fsdecode(b"bytes-\xff")).write_text("not utf-8")
    os.chmod(live / "venv" / "lib" / "m1.py", 0o4755)  # noqa: S103 - setuid must survive the round trip
    return ss.Store(str(tmp_path / "store")), str(live)


def test_round_trip_restores_type_mode_content_mtime_symlinks_empty_dirs(env):
    store, live = env
    before = state(live)
    snap = store.snapshot([live], label="base")
    assert snap["manifest"]["roots"][0]["files"] == 305
    # churn: add, remove, modify, replace a model, turn a dir into a symlink that escapes
    Path(live, "venv", "lib", "m5.py").write_text("changed")
    os.unlink(os.path.join(live, "venv", "lib", "m6.py"))
    Path(os.path.join(live, "venv", "new.py")).write_text("new")
    with open(os.path.join(live, "models", "big.safetensors"), "wb") as f:
        f.write(os.urandom(ss.LARGE * 2))
    os.rmdir(os.path.join(live, "empty"))
    os.symlink("/tmp", os.path.join(live, "empty"))
    os.chmod(os.path.join(live, "venv", "lib", "m7.py"), 0o600)
    res = store.rollback(snap["id"])
    assert res["before"] and res["stats"]["written"] == 3
    assert state(live) == before
    # undo the rollback: the churned state comes back
    store.rollback(res["before"])
    assert Path(os.path.join(live, "venv", "new.py")).read_text() == "new"
    assert os.path.islink(os.path.join(live, "empty"))
    assert store.check(deep=True)["ok"]


def test_rollback_restores_directory_metadata_it_did_not_otherwise_touch(env):
    # Only directories whose line differs or whose entries change are revisited: a directory that was
    # only touched (mtime) or chmod'ed, with no entry changed, must still come back.
    store, live = env
    before = state(live)
    snap = store.snapshot([live])
    os.utime(os.path.join(live, "models"), ns=(10**9, 10**9))
    os.chmod(os.path.join(live, "models", "Lora"), 0o700)
    os.mkdir(os.path.join(live, "venv", "lib", "new-dir"))  # the new entry changes lib's mtime
    res = store.rollback(snap["id"])
    assert res["stats"]["removed"] == 1
    assert state(live) == before


def test_no_change_snapshot_reads_nothing_and_writes_only_its_manifest(env):
    store, live = env
    first = store.snapshot([live])
    second = store.snapshot([live])
    s = second["manifest"]["stats"]
    assert (s["read_files"], s["new_bytes"], s["new_blobs"]) == (0, 0, 0)
    assert second["manifest"]["roots"][0]["tree"] == first["manifest"]["roots"][0]["tree"]
    assert second["manifest"]["parent"] == first["id"]


def test_same_size_same_mtime_edit_is_caught_by_ctime(env):
    store, live = env
    p = os.path.join(live, "venv", "lib", "m10.py")
    st = os.stat(p)
    snap = store.snapshot([live])
    with open(p, "r+") as f:
        f.write("X")  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = store.snapshot([live])
    assert second["manifest"]["stats"]["read_files"] == 1
    store.rollback(snap["id"])
    assert Path(p).read_text().startswith("p")


def test_small_files_are_packed_large_files_are_objects(env):
    store, live = env
    store.snapshot([live])
    packs = [n for _, n in store.walk_files("packs")]
    objects = [n for n, _ in store.walk_files("objects")]
    assert len(packs) == 1, "300 small files must share one pack, not one file each"
    with open(os.path.join(live, "models", "big.safetensors"), "rb") as f:
        assert objects == [hashlib.sha256(f.read()).hexdigest()]


def test_model_sha256s_come_from_the_tree(env):
    store, live = env
    m = store.snapshot([live])["manifest"]
    big = os.path.join(live, "models", "big.safetensors")
    with open(big, "rb") as f:
        assert m["facts"]["models"][big] == hashlib.sha256(f.read()).hexdigest()
    assert os.path.join(live, "models", "Lora", "small.safetensors") in m["facts"]["models"]


def test_symlink_pointing_outside_is_recorded_not_followed(env):
    store, live = env
    m = store.snapshot([live])["manifest"]
    listing = store.read_tree_map(m["roots"][0]["tree"])
    assert listing["outside"][1] == "l" and listing["outside"][9] == "/etc"
    assert not any(p.startswith("outside/") for p in listing)


def test_rollback_paths_limits_the_restore_and_refuses_paths_outside(env):
    store, live = env
    snap = store.snapshot([live])
    a, b = os.path.join(live, "venv", "lib", "m1.py"), os.path.join(live, "zero")
    Path(a).write_text("A")
    Path(b).write_text("B")
    store.rollback(snap["id"], [os.path.join(live, "venv")])
    assert Path(a).read_text() != "A" and Path(b).read_text() == "B"
    with pytest.raises(ss.SnapshotError, match="outside the snapshot's roots"):
        store.rollback(snap["id"], ["/etc"])
    with pytest.raises(ss.SnapshotError, match="beyond the symlink"):
        store.rollback(snap["id"], [os.path.join(live, "outside", "passwd")])


def test_rollback_never_writes_through_a_symlink_that_replaced_a_directory(env, tmp_path):
    store, live = env
    snap = store.snapshot([live])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lib = os.path.join(live, "venv", "lib")
    os.rename(lib, str(elsewhere / "lib"))
    os.symlink(str(elsewhere / "lib"), lib)
    os.unlink(str(elsewhere / "lib" / "m3.py"))
    store.rollback(snap["id"])
    assert not os.path.islink(lib) and os.path.isfile(os.path.join(lib, "m3.py"))
    assert not (elsewhere / "lib" / "m3.py").exists()


def test_a_failed_snapshot_removes_what_it_wrote(env, monkeypatch):
    store, live = env
    real = store.atomic_write

    def fail_on_manifest(final, data, mode=0o444):
        if os.sep + "snapshots" + os.sep in final:
            raise OSError(5, "simulated I/O error")
        return real(final, data, mode)

    monkeypatch.setattr(store, "atomic_write", fail_on_manifest)
    with pytest.raises(ss.SnapshotError, match="simulated I/O error"):
        store.snapshot([live])
    monkeypatch.undo()
    assert store.list() == []
    c = store.check()
    assert c["ok"] and c["interrupted_runs"] == 0
    assert set(c["garbage"].values()) == {0}, c["garbage"]
    assert not [n for _, n in store.walk_files("objects")] and not [n for _, n in store.walk_files("packs")]


def _killed_in_a_child(run, at):
    """Run `run()` in a forked child that dies (os._exit, as kill -9: no cleanup of any kind) when `at` is
    called; returns once the child is gone."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            at.install(lambda *a, **k: os._exit(9))
            run()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9, "the child was meant to die at the chosen point"


class _At:
    """Where a forked child dies: replace obj.name by a function that first does `before` (leaving what a
    real kill would have left), then dies."""

    def __init__(self, obj, name, before=None):
        self.obj, self.name, self.before = obj, name, before

    def install(self, die):
        real = getattr(self.obj, self.name)

        def wrapper(*args, **kwargs):
            if self.before is None or self.before(real, *args, **kwargs):
                die()
            return real(*args, **kwargs)

        setattr(self.obj, self.name, wrapper)


def _leave_a_big_temp_file(store):
    fd, _ = store.tmpfile()
    os.ftruncate(fd, 3 << 20)  # what a killed copy of a large file leaves
    os.close(fd)
    return True


@pytest.mark.parametrize("next_op", ["snapshot", "rollback", "prune", "pin"])
def test_what_a_killed_snapshot_left_is_removed_by_the_next_operation(env, next_op):
    store, live = env
    first = store.snapshot([live])
    Path(live, "models", "big.safetensors").write_bytes(os.urandom(ss.LARGE * 3))
    for i in range(40):
        Path(live, "venv", "lib", f"n{i}.py").write_text(f"new {i}\n")
    _killed_in_a_child(
        lambda: store.snapshot([live]),
        _At(ss.Store, "write_manifest", before=lambda real, self, m: _leave_a_big_temp_file(self)),
    )
    c = store.check()
    assert c["ok"] and c["interrupted_runs"] == 1 and len(store.list()) == 1
    assert (
        c["garbage"]["tmp_files"] == 1
        and c["garbage"]["unused_blobs"] >= 2
        and c["garbage"]["bytes"] > ss.LARGE * 6
    )
    if next_op == "snapshot":
        warnings = store.snapshot([live])["warnings"]
    elif next_op == "rollback":
        warnings = store.rollback(first["id"])["warnings"]
    elif next_op == "prune":
        warnings = store.prune({"keep_last": 10})["warnings"]
    else:
        store.set_pinned(first["id"], True)
        warnings = store.warnings
    assert any("temp file(s)" in w for w in warnings) and any("store file(s)" in w for w in warnings)
    c = store.check(deep=True)
    assert c["ok"] and c["interrupted_runs"] == 0
    assert set(c["garbage"].values()) == {0}, c["garbage"]


def _leave_a_mostly_dead_pack(store, live):
    """Two snapshots; all but 50 of the 300 small files of the first are gone in the second."""
    store.snapshot([live])
    lib = os.path.join(live, "venv", "lib")
    for i in range(250):
        os.unlink(os.path.join(lib, f"m{i}.py"))
    store.snapshot([live])


def test_a_killed_prune_is_undone_or_finished_by_the_next_operation(env):
    store, live = env
    _leave_a_mostly_dead_pack(store, live)
    policy = {"keep_last": 1, "keep_hourly_hours": 0, "keep_daily_days": 0, "keep_weekly_weeks": 1}
    # Killed before its new index is durable: its new pack is removed, the old index and packs stay.
    _killed_in_a_child(
        lambda: store.prune(policy),
        _At(ss.Store, "write_content", before=lambda real, self, final, data: "index" in final),
    )
    assert store.check()["interrupted_runs"] == 1
    store.snapshot([live])
    c = store.check(deep=True)
    assert c["ok"] and c["interrupted_runs"] == 0 and c["garbage"]["unindexed_packs"] == 0
    # Killed once committed, while deleting the old index files: the next operation finishes the deletions.
    from snapshot_store import prune

    _killed_in_a_child(lambda: store.prune(policy), _At(prune, "remove", before=lambda real, p: "index" in p))
    assert store.check()["interrupted_runs"] == 1
    store.set_pinned("latest", True)
    c = store.check(deep=True)
    assert c["ok"] and c["interrupted_runs"] == 0, c
    assert set(c["garbage"].values()) == {0}, c["garbage"]
    store.rollback(store.list()[0]["id"])  # every blob the kept snapshots need is still there


def test_check_finds_missing_pack_and_deep_finds_damaged_object(env):
    store, live = env
    store.snapshot([live])
    ((_, path),) = list(store.walk_files("objects"))
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))  # always a change (writing a fixed byte misses 1 time in 256)
    assert store.check()["ok"], "a same-size change is only visible to DEEP"
    deep = store.check(deep=True)
    assert not deep["ok"] and any("damaged" in e for e in deep["errors"])
    ((_, pack),) = list(store.walk_files("packs"))
    os.unlink(pack)
    assert any("is missing" in e for e in store.check()["errors"])


def test_prune_forgets_by_policy_keeps_pinned_and_sweeps(env):
    store, live = env
    first = store.snapshot([live], pinned=True)
    big = os.path.join(live, "models", "big.safetensors")
    for _ in range(3):
        with open(big, "wb") as f:
            f.write(os.urandom(ss.LARGE + 1))
        store.snapshot([live])
    res = store.prune({"keep_last": 1, "keep_hourly_hours": 0, "keep_daily_days": 0, "keep_weekly_weeks": 1})
    assert len(res["forget"]) == 2 and res["objects_deleted"] == 2
    assert next(s["id"] for s in store.list()) == first["id"]
    assert store.check(deep=True)["ok"]
    assert store.prune({"keep_last": 1})["changed"] is False


def test_prune_repacks_packs_that_are_mostly_garbage(env):
    store, live = env
    _leave_a_mostly_dead_pack(store, live)
    res = store.prune({"keep_last": 1, "keep_hourly_hours": 0, "keep_daily_days": 0, "keep_weekly_weeks": 1})
    assert res["packs_repacked"] == 1
    assert store.check(deep=True)["ok"]
    store.rollback("latest")  # content still readable after the repack


def test_exclusive_lock_blocks_a_second_writer_with_a_clear_message(env):
    store, _ = env
    store.init()
    held, release = threading.Event(), threading.Event()

    def holder():
        with store.locked(True):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(ss.SnapshotError, match="is busy"), ss.Store(store.path).locked(True, timeout=0.2):
            pass
    finally:
        release.set()
        t.join()


def test_interrupted_rollback_journal_is_recovered(env):
    store, live = env
    snap = store.snapshot([live])
    stray = os.path.join(live, "venv", ss.TMP_PREFIX + "abc.1.tmp")
    Path(stray).write_text("half")
    store.atomic_write(
        os.path.join(store.path, "journal", "abc.json"),
        b'{"token": "abc", "target": "T", "before": "B", "roots": ["%s"]}' % live.encode(),
    )
    assert store.check()["interrupted_rollbacks"] == 1
    res = store.snapshot([live])
    assert not os.path.exists(stray)
    assert any("interrupted" in w for w in res["warnings"])
    listing = store.read_tree_map(res["manifest"]["roots"][0]["tree"])
    assert not any(ss.TMP_PREFIX in p for p in listing)
    assert set(listing) == set(store.read_tree_map(snap["manifest"]["roots"][0]["tree"]))


@pytest.mark.parametrize(
    "label",
    ["../x", "a/b", "..", "x" * 65, "-lead", "sp ace", "base\n", "base\n\n", "\nbase", "ba\tse", "base\r"],
)
def test_bad_labels_are_refused_in_one_sentence_naming_the_label(env, label):
    # A label is matched whole: `$` also matches before a trailing newline, which re.match(r"^...$") let
    # through and which broke the `make snapshots` table.
    store, live = env
    with pytest.raises(ss.SnapshotError) as refused:
        store.snapshot([live], label=label)
    message = str(refused.value)
    assert message.startswith(f"The snapshot label {label!r} is not allowed: ")
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert not os.path.exists(store.path), "a refused snapshot creates nothing"


@pytest.mark.parametrize("label", ["base", "v1.2_rc-3", "9", "x" * 64])
def test_good_labels_are_kept_as_given(env, label):
    store, live = env
    assert store.snapshot([live], label=label)["manifest"]["label"] == label
    assert [s["label"] for s in store.list()] == [label]


def test_snapshot_ids_and_refs_are_matched_whole(env):
    store, live = env
    snapid = store.snapshot([live])["id"]
    with pytest.raises(ss.SnapshotError, match="is not a snapshot id"):
        store.resolve(snapid + "\n")
    # A manifest file whose name is an id plus a newline is not a snapshot.
    Path(store.path, "snapshots", snapid[:-1] + "0\n.json").write_text("{}")
    assert store.snapshot_ids() == [snapid]


def test_unknown_and_ambiguous_ids(env):
    store, live = env
    with pytest.raises(ss.SnapshotError, match="no snapshot store"):
        ss.Store(store.path + "-none").rollback("latest")
    store.snapshot([live])
    store.snapshot([live])
    with pytest.raises(ss.SnapshotError, match="no snapshot 'nope'"):
        store.rollback("nope")
    with pytest.raises(ss.SnapshotError, match="ambiguous"):
        store.resolve("2")
    with pytest.raises(ss.SnapshotError, match="not a snapshot id"):
        store.resolve("../etc")


def test_restore_into_new_directory(env, tmp_path):
    store, live = env
    snap = store.snapshot([live])
    dest = str(tmp_path / "restored")
    store.restore(snap["id"], dest)
    assert state(dest + live) == state(live)
    with pytest.raises(ss.SnapshotError, match="exists"):
        store.restore(snap["id"], dest)


def test_absent_root_is_recorded_and_rollback_removes_it(env, tmp_path):
    store, live = env
    zprofile = str(tmp_path / "zprofile")
    snap = store.snapshot([live, zprofile])
    assert snap["manifest"]["roots"][1]["present"] is False
    Path(zprofile).write_text("eval")
    store.rollback(snap["id"])
    assert not os.path.exists(zprofile)


def test_dry_run_rollback_changes_nothing(env):
    store, live = env
    snap = store.snapshot([live])
    p = os.path.join(live, "zero")
    Path(p).write_text("now")
    res = store.rollback(snap["id"], dry_run=True)
    assert res["changed"] and res["plan"][live]["write"] == 1
    assert Path(p).read_text() == "now"
    assert len(store.list()) == 1


def test_overlapping_or_relative_roots_are_refused(env):
    store, live = env
    with pytest.raises(ss.SnapshotError, match="overlap"):
        store.snapshot([live, os.path.join(live, "venv")])
    with pytest.raises(ss.SnapshotError, match="not absolute"):
        store.snapshot(["relative/path"])


def test_diff_listings():
    def e(path, typ="f", mode=0o644, size=1, mtime=1, ref="a"):
        return (path, typ, mode, 0, 0, size, mtime, 9, 9, ref, "")

    old = {"a": e("a"), "b": e("b"), "c": e("c"), "d": e("d", "d", ref="")}
    new = {"a": e("a", ref="z"), "b": e("b", mode=0o600), "d": e("d", "d", mtime=5, ref=""), "n": e("n")}
    d = ss.diff_listings(old, new)
    assert d == {"added": ["n"], "removed": ["c"], "content": ["a"], "metadata": ["b"]}


def test_tree_line_escaping_round_trips():
    name = "we\tird\nna\\me"
    assert fmt.unesc(fmt.esc(name)) == name
    assert "\t" not in fmt.esc(name) and "\n" not in fmt.esc(name)


def test_stat_cache_after_churn_matches_a_walk_without_cache(env, tmp_path):
    # The cache lookup follows the parent listing in order and falls back to a map on the first mismatch:
    # after adds, removals and edits spread through the tree, the listing must equal an uncached walk's.
    store, live = env
    store.snapshot([live])
    lib = os.path.join(live, "venv", "lib")
    os.unlink(os.path.join(lib, "m3.py"))
    Path(lib, "m150.py").write_text("edited, longer than before\n")
    Path(lib, "a-first.py").write_text("new at the front")
    Path(lib, "m2999.py").write_text("new in the middle")
    os.mkdir(os.path.join(live, "venv", "new-dir"))
    Path(live, "zz-last").write_text("new at the end")
    second = store.snapshot([live])
    assert second["manifest"]["stats"]["read_files"] == 4
    fresh = ss.Store(str(tmp_path / "fresh-store")).snapshot([live])
    assert fresh["manifest"]["stats"]["read_files"] > 300
    tree = second["manifest"]["roots"][0]["tree"]
    assert tree == fresh["manifest"]["roots"][0]["tree"]


@pytest.mark.parametrize("by_path", [True, False])
def test_large_copy_stores_exactly_the_hashed_bytes(tmp_path, by_path):
    data = os.urandom(3 * (4 << 20) + 12345)  # several pipeline buffers and a tail of part of a block
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    sfd = os.open(src, os.O_RDONLY)
    os.lseek(sfd, 100, os.SEEK_SET)  # the copy starts at the file's start, wherever its position is
    dfd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        h = hashlib.sha256()
        fileio.copy_fd(sfd, dfd, str(dst) if by_path else None, h)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert dst.read_bytes() == data
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_timegm_matches_calendar():
    import calendar
    import time

    for t in (0, 951782400, 1709164800, 4102444799, 1795561441, -86400 * 365):
        assert fmt.timegm(time.gmtime(t)) == calendar.timegm(time.gmtime(t)) == t


def _second_half(store, snap):
    lines = store.read_tree(snap["manifest"]["roots"][0]["tree"])
    m = len(lines) // 2
    return lines, m, fmt.unesc(lines[m].split("\t", 1)[0]).split("/")


def test_split_walk_child_walks_exactly_the_second_half(env):
    store, live = env
    snap = store.snapshot([live])
    lines, m, path = _second_half(store, snap)
    parent, base = os.path.split(live)
    pfd = os.open(parent, os.O_RDONLY)
    try:

        def second_half():
            return snapshotter.match_suffix(pfd, base, path, lines, m)

        want = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        for t in map(ss.parse_line, lines[m:]):
            want[{"f": "files", "d": "dirs", "l": "symlinks"}[t[1]]] += 1
            want["bytes"] += t[5] if t[1] == "f" else 0
        # Nothing changed: one run of parent lines, the whole second half.
        assert second_half() == {"counts": want, "items": [[m, len(lines) - m]]}
        first_half_file = next(t[0] for t in map(ss.parse_line, lines[1:m]) if t[1] == "f")
        Path(live, first_half_file).write_text("edited in the first half")
        assert second_half() == {"counts": want, "items": [[m, len(lines) - m]]}  # not the child's half
        at, second_half_file = next(
            (i, t[0]) for i, t in enumerate(map(ss.parse_line, lines[m:]), m) if t[1] == "f"
        )
        os.chmod(os.path.join(live, second_half_file), 0o600)
        got = second_half()
        assert got["counts"] == want
        # The changed file, in its place between the parent lines before and after it.
        (miss,) = [x for x in got["items"] if x[0] == "m"]
        assert miss[:3] == ["m", second_half_file, "f"] and stat.S_IMODE(miss[4]) == 0o600
        runs = [x for x in got["items"] if isinstance(x[0], int)]
        assert runs == ([[m, at - m]] if at > m else []) + [[at + 1, len(lines) - at - 1]]
        assert got["items"].index(miss) == (1 if at > m else 0)
    finally:
        os.close(pfd)


@pytest.mark.parametrize("walk_split", ["split walk"], indirect=True)
@pytest.mark.parametrize(
    "change",
    ["none", "added at the end", "removed at the split", "ancestor replaced", "changes in both halves"],
)
def test_split_walk_matches_a_serial_walk(env, tmp_path, monkeypatch, change, walk_split):
    store, live = env
    snap = store.snapshot([live])
    _lines, _m, path = _second_half(store, snap)
    if change == "changes in both halves":
        for i, t in enumerate(map(ss.parse_line, _lines)):
            p = os.path.join(live, t[0])
            if t[1] == "f" and i % 37 == 0:
                Path(p).write_text(f"changed {i}\n")
            elif t[1] == "f" and i % 41 == 0:
                os.unlink(p)
            elif t[1] == "d" and i % 3 == 0 and t[0] != ".":
                os.mkdir(os.path.join(p, "new-dir"))
                Path(p, "new-dir", "x.py").write_text("x")
                os.symlink("x.py", os.path.join(p, "new-dir", "link"))
    results = []
    real = snapshotter.Split.result

    def spy(self):
        results.append(real(self))
        return results[-1]

    monkeypatch.setattr(snapshotter.Split, "result", spy)
    if change == "added at the end":
        Path(live, "zzz-new").write_text("new")
    elif change == "removed at the split":
        target = os.path.join(live, *path)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    elif change == "ancestor replaced" and len(path) > 1:
        anc = os.path.join(live, path[0])
        shutil.rmtree(anc)
        Path(anc).write_text("a file where the directory was")
    second = store.snapshot([live])
    assert len(results) == 1
    # The child walked its half either way; only with no change is it one run of the parent's lines.
    assert (results[0]["items"] == [[_m, len(_lines) - _m]]) == (change == "none")
    fresh = ss.Store(str(tmp_path / "fresh")).snapshot([live])
    assert second["manifest"]["roots"][0]["tree"] == fresh["manifest"]["roots"][0]["tree"]


def test_id_time_matches_strptime():
    import calendar

    for sid in (
        "20261125T002142.020979Z-1042",
        "19991231T235959.999999Z-ffff",
        "20000229T120000.000001Z-0000",
    ):
        want = calendar.timegm(time.strptime(sid[:15], "%Y%m%dT%H%M%S")) * 10**9 + int(sid[16:22]) * 1000
        assert fmt.id_time_ns(sid) == want


def test_trees_written_zlib_compressed_by_earlier_versions_are_still_read(env):
    import zlib

    store, live = env
    snap = store.snapshot([live])
    tree = snap["manifest"]["roots"][0]["tree"]
    path = store.p("trees", tree)
    with open(path, "rb") as f:
        plain = f.read()
    assert plain.startswith(b".\t")
    os.chmod(path, 0o644)
    Path(path).write_bytes(zlib.compress(plain, 1))
    assert store.read_tree(tree) == plain.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    assert store.check(deep=True)["ok"]
    assert store.snapshot([live])["manifest"]["stats"]["read_files"] == 0  # the stat cache still works


def _fresh_tree(tmp_path, live):
    """The tree a walk with no stat cache records for live now."""
    fresh = ss.Store(str(tmp_path / f"fresh-{time.monotonic_ns()}"))
    return fresh.snapshot([live])["manifest"]["roots"][0]["tree"]


@pytest.mark.parametrize("paths", ["whole root", "PATHS"])
def test_the_snapshot_after_a_rollback_reads_nothing_the_rollback_wrote(env, tmp_path, paths):
    store, live = env
    base = store.snapshot([live])
    Path(live, "venv", "lib", "m5.py").write_text("changed")
    os.unlink(os.path.join(live, "venv", "lib", "m6.py"))
    Path(live, "venv", "new.py").write_text("new")
    Path(live, "models", "big.safetensors").write_bytes(os.urandom(ss.LARGE * 2))
    os.chmod(os.path.join(live, "venv", "lib", "m7.py"), 0o600)
    os.rmdir(os.path.join(live, "empty"))
    only = [os.path.join(live, "venv"), os.path.join(live, "models"), os.path.join(live, "empty")]
    res = store.rollback(base["id"], only if paths == "PATHS" else None)
    assert res["stats"]["written"] == 3 and res["stats"]["bytes_written"] > ss.LARGE
    after = store.snapshot([live])
    s = after["manifest"]["stats"]
    assert (s["read_files"], s["read_bytes"], s["new_bytes"]) == (0, 0, 0), s
    # What the rollback recorded is exactly what a walk with no stat cache records now.
    assert after["manifest"]["roots"][0]["tree"] == _fresh_tree(tmp_path, live)
    assert store.check(deep=True)["ok"]


def test_a_change_right_after_a_rollback_is_still_seen(env):
    # The rollback records a key only once the entry's ctime has settled, so even a same-size rewrite that
    # puts the old mtime back, right after the rollback, changes the key.
    store, live = env
    base = store.snapshot([live])
    p = Path(live, "venv", "lib", "m5.py")
    p.write_text("x" * len(p.read_text()))
    store.rollback(base["id"])
    st = p.stat()
    p.write_text("y" * st.st_size)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.snapshot([live])["manifest"]["stats"]["read_files"] == 1


def test_settled_ctime_waits_a_tick_or_the_racy_window_for_whole_second_timestamps(monkeypatch):
    monkeypatch.setattr(snapshotter, "RACY_NS", 2 * 10**9)
    t = 1_800_000_000 * 10**9
    assert snapshotter.settled_ctime(t + 123, t + 123 + snapshotter.SETTLE_NS) == t + 123
    assert snapshotter.settled_ctime(t + 123, t + 122 + snapshotter.SETTLE_NS) == 0
    assert snapshotter.settled_ctime(t, t + snapshotter.SETTLE_NS) == 0  # whole seconds: HFS+, FAT
    assert snapshotter.settled_ctime(t, t + 3 * 10**9) == t


def test_a_small_change_stores_a_delta_and_reads_back_as_the_whole_listing(env, tmp_path):
    store, live = env
    first = store.snapshot([live])["manifest"]["roots"][0]["tree"]
    whole = os.path.getsize(store.p("trees", first))
    for i in (10, 150, 290):
        Path(live, "venv", "lib", f"m{i}.py").write_text(f"edited {i}\n")
    Path(live, "venv", "lib", "m3.py").unlink()
    second = store.snapshot([live])["manifest"]["roots"][0]["tree"]
    with open(store.p("trees", second), "rb") as f:
        data = f.read()
    assert data.startswith(fmt.DELTA_MAGIC) and fmt.tree_header(data)[:2] == (first, 1)
    assert len(data) < whole * 0.05, (len(data), whole)
    assert second == _fresh_tree(tmp_path, live)
    lines = ss.Store(store.path).read_tree(second)  # a new process: read through the chain
    assert hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest() == second
    assert store.check(deep=True)["ok"]


def test_a_chain_of_deltas_is_cut_at_its_depth_limit(env, monkeypatch):
    from snapshot_store import repository

    monkeypatch.setattr(repository, "DELTA_MAX_DEPTH", 2)
    store, live = env
    depths = []
    for i in range(5):
        Path(live, "venv", "lib", f"m{i}.py").write_text(f"round {i}\n")
        tree = store.snapshot([live])["manifest"]["roots"][0]["tree"]
        depths.append(store.tree_header(tree)[1])
    assert depths == [0, 1, 2, 0, 1]
    for s in store.list():
        store.restore(s["id"], os.path.join(store.path + "-restored", s["id"]))
    assert store.check(deep=True)["ok"]


def test_names_with_line_breaks_other_than_newline_survive_the_listing(env, tmp_path):
    # str.splitlines would also split at \r, \x1c, \x85 or \u2028, which a file name may hold.
    store, live = env
    names = ["cr\rname", "fs\x1cname", "nel\x85name", "ls\u2028name"]
    for n in names:
        Path(live, n).write_bytes(n.encode())
    snap = store.snapshot([live])
    for n in names:
        Path(live, n).write_bytes(b"changed")
    store.snapshot([live])  # a delta, and a stat-cache file, holding those names
    store.rollback(snap["id"])
    assert [Path(live, n).read_bytes() for n in names] == [n.encode() for n in names]
    assert store.check(deep=True)["ok"]


def _v1_store(path: Path, live: Path, zprofile: Path) -> str:
    """A version-1 store written by hand from the README's description of version 1 (not by the code under
    test): one pack, one object, an index file, a plain tree, a zlib tree, one manifest. Returns its id."""
    import json
    import zlib

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    def put(rel: str, data: bytes) -> None:
        p = path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o444)

    for d in ("packs", "objects", "trees", "index", "snapshots", "journal", "tmp"):
        (path / d).mkdir(parents=True)
    (path / "lock").write_bytes(b"")
    put("config.json", json.dumps({"format": "sdenv-snapshot-store", "version": 1, "id": "ab" * 16}).encode())
    hello, profile, big = b"hello\n", b'eval "$(brew shellenv)"\n', os.urandom(ss.LARGE + 5)
    trailer = json.dumps([[sha(hello), 0, len(hello)], [sha(profile), len(hello), len(profile)]]).encode()
    pack = hello + profile + trailer + len(trailer).to_bytes(8, "little") + b"SDENVPK1"
    put(f"packs/{sha(pack)[:2]}/{sha(pack)}", pack)
    put(f"objects/{sha(big)[:2]}/{sha(big)}", big)
    blobs = [[sha(hello), 0, len(hello)], [sha(profile), len(hello), len(profile)]]
    index = json.dumps({"version": 1, "packs": {sha(pack): {"size": len(pack), "blobs": blobs}}}).encode()
    put(f"index/{sha(index)}.json", index)
    u, g, t = os.getuid(), os.getgid(), 1_700_000_000 * 10**9
    # path type mode uid gid size mtime_ns ctime_ns inode ref xattrs (ctime 0: never a stat-cache hit)
    listing = "".join(
        "\t".join(map(str, fields)) + "\n"
        for fields in [
            (".", "d", "755", u, g, 0, t, 0, 0, "", ""),
            ("a\\tb.txt", "f", "644", u, g, len(hello), t + 1, 0, 0, sha(hello), ""),
            ("empty", "f", "600", u, g, 0, t + 2, 0, 0, "", ""),
            ("link", "l", "777", u, g, 0, t + 3, 0, 0, "a\\tb.txt", ""),
            ("models", "d", "750", u, g, 0, t + 4, 0, 0, "", ""),
            ("models/big.safetensors", "f", "640", u, g, len(big), t + 5, 0, 0, sha(big), ""),
        ]
    ).encode()
    put(f"trees/{sha(listing)[:2]}/{sha(listing)}", listing)
    zlisting = f".\tf\t644\t{u}\t{g}\t{len(profile)}\t{t + 6}\t0\t0\t{sha(profile)}\t\n".encode()
    put(f"trees/{sha(zlisting)[:2]}/{sha(zlisting)}", zlib.compress(zlisting))
    snapid = "20251120T101500.123456Z-0a1b"
    roots = [
        {"path": str(live), "present": True, "tree": sha(listing), "files": 3, "dirs": 2, "symlinks": 1},
        {"path": str(zprofile), "present": True, "tree": sha(zlisting), "files": 1, "dirs": 0, "symlinks": 0},
    ]
    manifest = {
        "version": 1,
        "id": snapid,
        "time": "2025-11-20T10:15:00Z",
        "time_ns": t,
        "label": "made-by-v1",
        "kind": "manual",
        "pinned": False,
        "host": "h",
        "parent": None,
        "roots": roots,
        "stats": {"files": 4, "logical_bytes": len(hello) + len(big) + len(profile), "new_bytes": 0},
        "facts": {"models": {str(live / "models" / "big.safetensors"): sha(big)}},
    }
    put(f"snapshots/{snapid}.json", json.dumps(manifest).encode())
    return snapid, big


def test_a_version_1_store_is_read_and_upgraded_on_its_first_write(tmp_path):
    live, zprofile = tmp_path / "webui", tmp_path / "zprofile"
    snapid, big = _v1_store(tmp_path / "store", live, zprofile)
    store = ss.Store(str(tmp_path / "store"))
    assert [s["label"] for s in store.list()] == ["made-by-v1"]
    c = store.check(deep=True)
    assert c["ok"] and c["version"] == 1 and set(c["garbage"].values()) == {0}, c
    store.restore(snapid, str(tmp_path / "restored"))
    restored = tmp_path / "restored" / str(live).lstrip("/")
    assert (restored / "a\tb.txt").read_bytes() == b"hello\n" and os.readlink(restored / "link") == "a\tb.txt"
    assert (restored / "models" / "big.safetensors").read_bytes() == big
    assert oct(os.stat(restored / "models").st_mode & 0o777) == "0o750"
    assert os.stat(restored / "a\tb.txt").st_mtime_ns == 1_700_000_000 * 10**9 + 1
    # The first write (here a rollback of roots that do not exist yet) records version 2 and says so.
    res = store.rollback(snapid)
    assert any("now has format version 2 (it had 1)" in w for w in res["warnings"])
    assert state(live) == state(restored) and zprofile.read_bytes() == b'eval "$(brew shellenv)"\n'
    assert store.snapshot([str(live), str(zprofile)])["manifest"]["stats"]["read_files"] == 0
    c = store.check(deep=True)
    assert c["ok"] and c["version"] == 2 and c["snapshots"] == 3


def test_a_store_of_an_unknown_version_is_refused_in_one_sentence(tmp_path):
    live, zprofile = tmp_path / "webui", tmp_path / "zprofile"
    _v1_store(tmp_path / "store", live, zprofile)
    cfg = tmp_path / "store" / "config.json"
    cfg.chmod(0o644)
    cfg.write_text('{"format": "sdenv-snapshot-store", "version": 3, "id": "x"}')
    with pytest.raises(
        ss.SnapshotError, match=r"has format version 3, which this toolkit does not read"
    ) as e:
        ss.Store(str(tmp_path / "store")).snapshot([str(live)])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("between", ["nothing", "a no-change snapshot"])
def test_the_tree_a_rollback_records_never_outlives_its_use(env, between):
    store, live = env
    base = store.snapshot([live])
    Path(live, "venv", "lib", "m5.py").write_text("changed")
    store.rollback(base["id"])
    if between == "a no-change snapshot":
        store.snapshot([live])  # names the recorded tree: it stays
    for dirpath, _, filenames in os.walk(live):  # every key changes: the next tree is whole, not a delta
        for n in filenames:
            st = os.lstat(os.path.join(dirpath, n))
            os.utime(os.path.join(dirpath, n), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    store.snapshot([live])
    c = store.check(deep=True)
    assert c["ok"] and set(c["garbage"].values()) == {0}, c["garbage"]


@pytest.mark.parametrize("direct", ["O_DIRECT where the filesystem has it", "page cache only"])
def test_restore_cuts_the_work_by_bytes_and_writes_every_byte(env, tmp_path, monkeypatch, direct):
    # Small ranges and chunks, so that several threads share each large file and chunks start inside
    # directories another thread makes; every byte and every entry must still come out as captured.
    from snapshot_store import restore

    store, live = env
    monkeypatch.setattr(restore, "RANGE", 1 << 20)
    monkeypatch.setattr(restore, "BUFFER", 256 << 10)
    monkeypatch.setattr(restore, "CHUNK_COST", 1)
    if direct == "page cache only":
        monkeypatch.setattr(restore, "open_direct", lambda path, flags: None)
    big = Path(live, "models", "Stable-diffusion")
    big.mkdir()
    for i, size in enumerate([(5 << 20) + 4097, 3 << 20, ss.LARGE]):
        (big / f"m{i}.safetensors").write_bytes(os.urandom(size))
    for d in range(30):
        sub = Path(live, "deep", *[f"d{d}-{k}" for k in range(d % 5 + 1)])
        sub.mkdir(parents=True)
        (sub / "f.py").write_text(f"{d}\n")
    snap = store.snapshot([live])
    dest = tmp_path / "restored"
    store.restore(snap["id"], str(dest), threads=4)
    assert state(str(dest) + live) == state(live)


def test_a_restore_that_fails_leaves_nothing_behind(env, tmp_path):
    store, live = env
    snap = store.snapshot([live])
    ((_, obj),) = list(store.walk_files("objects"))
    os.unlink(obj)
    with pytest.raises(ss.SnapshotError, match="is missing from the store"):
        store.restore(snap["id"], str(tmp_path / "restored"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith("restored")]


def test_a_journal_never_removes_anything_outside_the_store(env, tmp_path):
    store, live = env
    store.snapshot([live])
    outside = tmp_path / "precious"
    outside.write_text("keep me")
    journal = Path(store.path, "journal", "hand-made.files")
    journal.write_text(f"# snapshot, pid 1\n+../precious\n+{outside}\n-../../precious\n")
    store.snapshot([live])  # recovery settles the journal
    assert outside.read_text() == "keep me" and not journal.exists()
