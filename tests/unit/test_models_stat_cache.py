"""stat_cache: identity matching, atomic saves, merging with a concurrent writer, damaged files."""

import json
import os

import stat_cache as sc

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_round_trip_and_match(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"x" * 10)
    cache = sc.StatCache(str(tmp_path / "cache.json"))
    cache.record(str(model), os.lstat(model), SHA_A, addnet_sha256=SHA_B)
    assert cache.save() is True
    again = sc.StatCache(str(tmp_path / "cache.json"))
    entry = again.lookup(str(model), os.lstat(model), SHA_A)
    assert entry["addnet_sha256"] == SHA_B
    assert again.lookup(str(model), os.lstat(model), SHA_B) is None
    assert oct(os.stat(tmp_path / "cache.json").st_mode & 0o777) == "0o600"


def test_any_identity_change_misses(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"x" * 10)
    cache = sc.StatCache(str(tmp_path / "c.json"))
    cache.record(str(model), os.lstat(model), SHA_A)
    st = os.lstat(model)
    # mtime changed (same size, same inode)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.lookup(str(model), os.lstat(model), SHA_A) is None
    # replaced by a new file (new inode) with the old mtime and size
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"y" * 10)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, model)
    assert os.lstat(model).st_mtime_ns == st.st_mtime_ns
    assert cache.lookup(str(model), os.lstat(model), SHA_A) is None


def test_unchanged_save_writes_nothing(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    path = tmp_path / "c.json"
    cache = sc.StatCache(str(path))
    cache.record(str(model), os.lstat(model), SHA_A)
    cache.save()
    inode = os.stat(path).st_ino
    again = sc.StatCache(str(path))
    again.record(str(model), os.lstat(model), SHA_A)
    assert again.save() is False
    assert os.stat(path).st_ino == inode


def test_concurrent_writers_keep_each_others_entries(tmp_path):
    path = str(tmp_path / "c.json")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    first = sc.StatCache(path)
    second = sc.StatCache(path)
    first.record(str(a), os.lstat(a), SHA_A)
    second.record(str(b), os.lstat(b), SHA_B)
    first.save()
    second.save()
    merged = sc.StatCache(path)
    assert merged.lookup(str(a), os.lstat(a), SHA_A) and merged.lookup(str(b), os.lstat(b), SHA_B)


def test_damaged_cache_is_reported_and_ignored(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{half")
    cache = sc.StatCache(str(path))
    assert cache.entries == {}
    assert "could not be read" in cache.problem


def test_foreign_format_is_ignored(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": 99, "files": {"/x": {}}}))
    assert sc.StatCache(str(path)).entries == {}


def test_atomic_write_leaves_no_temp_files_and_sets_owner_mode(tmp_path):
    target = tmp_path / "out.json"
    sc.write_json_atomic(str(target), {"k": 1}, mode=0o640, uid=os.getuid(), gid=os.getgid())
    assert json.loads(target.read_text()) == {"k": 1}
    assert oct(os.stat(target).st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
