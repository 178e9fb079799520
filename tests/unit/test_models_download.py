"""model_download without a network: validation, fast path, hashing, local sources, rejections, progress.

The HTTP behaviour (Range, 416, redirects, tokens, cut connections, kill -9) is in
tests/integration/test_models_http.py, against a local server.
"""

import errno
import hashlib
import importlib.util
import json
import os
import pickle
import time
from pathlib import Path

import model_download as md
import pytest
from model_fixtures import random_safetensors, safetensors_bytes, sha256_hex

from tests.unit.conftest import OTHER_UID, RUNNER_UID


def _action_plugin():
    """The controller-side action plugin, loaded from its file (it is not a module_utils). It builds on the
    toolkit's sdenv_secret_module action, which ansible.cfg puts on the action plugin path."""
    from ansible.plugins.loader import action_loader

    root = Path(__file__).resolve().parents[2]
    action_loader.add_directory(str(root / "plugins" / "action"))
    path = root / "roles" / "models" / "action_plugins" / "model_file.py"
    spec = importlib.util.spec_from_file_location("models_action_model_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundle(tmp_path):
    """A bundle directory holding a valid model, and an empty destination directory."""
    src = tmp_path / "bundle"
    src.mkdir()
    blob = random_safetensors(4096, seed=1)
    (src / "model.safetensors").write_bytes(blob)
    dest_dir = tmp_path / "models"
    dest_dir.mkdir()
    return src, dest_dir, blob


def _spec(dest_dir, sources, sha, tmp_path, **kw):
    return md.Spec(
        dest=str(dest_dir / kw.pop("filename", "model.safetensors")),
        urls=[str(s) for s in sources],
        sha256=sha,
        stat_cache=str(tmp_path / "state" / "cache.json"),
        **kw,
    )


def test_bundle_directory_install_then_fast_path(tmp_path, bundle, monkeypatch):
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o640, size=len(blob))
    first = md.install(spec)
    dest = dest_dir / "model.safetensors"
    assert first["changed"] and first["verified_by"] == "download"
    assert dest.read_bytes() == blob
    assert oct(os.stat(dest).st_mode & 0o777) == "0o640"
    assert not (dest_dir / "model.safetensors.part").exists()

    # Second run: the stat cache stands in for reading; any read of the model would fail the test.
    def no_reading(*args, **kwargs):
        raise AssertionError("the model file was read on the fast path")

    monkeypatch.setattr(md, "hash_file", no_reading)
    monkeypatch.setattr(md, "check_file", no_reading)
    second = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o640, size=len(blob)))
    assert second["changed"] is False and second["verified_by"] == "stat-cache"
    assert second["sha256"] == sha256_hex(blob)


def test_fast_path_fixes_mode_without_reading(tmp_path, bundle, monkeypatch):
    src, dest_dir, blob = bundle
    md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path))
    monkeypatch.setattr(md, "hash_file", lambda *a, **k: pytest.fail("read on the fast path"))
    result = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o600))
    assert result["changed"] and result["verified_by"] == "stat-cache"
    assert oct(os.stat(dest_dir / "model.safetensors").st_mode & 0o777) == "0o600"
    assert md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o600))["changed"] is False


def _corrupt_in_place(dest, mtime_ns):
    data = bytearray(dest.read_bytes())
    data[-1] ^= 0xFF
    with open(dest, "r+b") as fh:  # same inode, same size
        fh.write(bytes(data))
    st = os.stat(dest)
    os.utime(dest, ns=(st.st_atime_ns, mtime_ns))
    return bytes(data)


def test_changed_file_is_hashed_and_replaced(tmp_path, bundle):
    src, dest_dir, blob = bundle
    sha = sha256_hex(blob)
    md.install(_spec(dest_dir, [src], sha, tmp_path))
    dest = dest_dir / "model.safetensors"
    data = _corrupt_in_place(dest, os.stat(dest).st_mtime_ns + 1_000_000_000)
    result = md.install(_spec(dest_dir, [src], sha, tmp_path))
    assert result["changed"] and result["verified_by"] == "download"
    assert result["replaced_sha256"] == sha256_hex(data)
    assert dest.read_bytes() == blob


def test_in_place_rewrite_with_mtime_set_back_needs_deep(tmp_path, bundle):
    # The documented limit of a size/mtime/inode cache: DEEP (deep=True) is what catches this.
    src, dest_dir, blob = bundle
    sha = sha256_hex(blob)
    md.install(_spec(dest_dir, [src], sha, tmp_path))
    dest = dest_dir / "model.safetensors"
    _corrupt_in_place(dest, os.stat(dest).st_mtime_ns)
    assert md.install(_spec(dest_dir, [src], sha, tmp_path))["verified_by"] == "stat-cache"
    deep = md.install(_spec(dest_dir, [src], sha, tmp_path, deep=True))
    assert deep["changed"] and deep["verified_by"] == "download"
    assert dest.read_bytes() == blob


def test_present_file_without_cache_entry_is_hashed_once(tmp_path, bundle):
    _src, dest_dir, blob = bundle
    (dest_dir / "model.safetensors").write_bytes(blob)
    spec = _spec(dest_dir, ["/nonexistent-bundle"], sha256_hex(blob), tmp_path)
    assert md.install(spec)["verified_by"] == "hash"
    assert md.install(spec)["verified_by"] == "stat-cache"
    spec.deep = True
    assert md.install(spec)["verified_by"] == "hash"


def test_check_mode_changes_nothing(tmp_path, bundle):
    src, dest_dir, blob = bundle
    result = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path), check_mode=True)
    assert result["changed"] and result["needs_download"]
    assert result["diff"]["before"] == {"state": "absent"}
    assert list(dest_dir.iterdir()) == []
    assert not (tmp_path / "state").exists()


def test_download_false_only_reports(tmp_path, bundle):
    src, dest_dir, blob = bundle
    result = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path), download=False)
    assert result["needs_download"] is True
    assert list(dest_dir.iterdir()) == []


def test_wrong_hash_is_kept_aside_and_named(tmp_path, bundle):
    src, dest_dir, blob = bundle
    expected = "0" * 64
    with pytest.raises(md.ModelFileError) as exc:
        md.install(_spec(dest_dir, [src], expected, tmp_path))
    message = str(exc.value)
    assert expected in message and sha256_hex(blob) in message
    rejected = tmp_path / "state" / "rejected" / "model.safetensors.rejected"
    assert f"it was kept at {rejected} (readable by" in message
    assert not (dest_dir / "model.safetensors").exists()
    assert rejected.read_bytes() == blob
    # Not in the WebUI's model folder (the dummy's), but 0600 in a 0700 directory of this run's user.
    assert sorted(p.name for p in dest_dir.iterdir()) == []
    assert (rejected.stat().st_mode & 0o777, rejected.stat().st_uid) == (0o600, os.geteuid())
    assert (rejected.parent.stat().st_mode & 0o777, rejected.parent.stat().st_uid) == (0o700, os.geteuid())


def test_next_source_after_a_failure(tmp_path, bundle):
    src, dest_dir, blob = bundle
    empty = tmp_path / "empty-bundle"
    empty.mkdir()
    result = md.install(
        _spec(
            dest_dir,
            [empty, f"file://{src}/model.safetensors"],
            sha256_hex(blob),
            tmp_path,
            bundle_dirs=[str(src)],
        )
    )
    assert [a["error"] is None for a in result["attempts"]] == [False, True]
    assert "is not in" in result["attempts"][0]["error"]


def test_all_sources_failing_lists_each(tmp_path, bundle):
    _src, dest_dir, blob = bundle
    with pytest.raises(md.ModelFileError, match=r"no source gave a verified model.safetensors \(2 tried\)"):
        md.install(_spec(dest_dir, ["/nope-a", "/nope-b"], sha256_hex(blob), tmp_path))


def test_bad_structure_with_matching_hash_is_refused(tmp_path):
    # A pinned hash that matches a file that is not a valid safetensors (bad offsets): still refused.
    src = tmp_path / "b"
    src.mkdir()
    header = json.dumps({"w": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\0" * 6
    (src / "bad.safetensors").write_bytes(blob)
    dest_dir = tmp_path / "d"
    dest_dir.mkdir()
    with pytest.raises(md.ModelFileError, match="is not a valid safetensors file: there is a hole"):
        md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, filename="bad.safetensors"))
    assert not (dest_dir / "bad.safetensors").exists()
    assert list(dest_dir.iterdir()) == []
    assert (tmp_path / "state" / "rejected" / "bad.safetensors.rejected").exists()


def test_size_mismatch(tmp_path, bundle):
    src, dest_dir, blob = bundle
    with pytest.raises(md.ModelFileError, match="not the pinned 10 bytes"):
        md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, size=10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sha256": None}, "has no pinned SHA256: run `make pin-models`"),
        ({"sha256": "abc"}, "is not 64 hex digits"),
        ({"sha256": "a" * 64, "filename": "m.ckpt"}, "only .safetensors files are installed by default"),
        ({"sha256": "a" * 64, "size": -1}, "is not a byte count"),
    ],
)
def test_validation_sentences(tmp_path, bundle, kwargs, message):
    src, dest_dir, _blob = bundle
    sha = kwargs.pop("sha256")
    with pytest.raises(md.ModelFileError, match=message):
        md.install(_spec(dest_dir, [src], sha, tmp_path, **kwargs))


def test_missing_destination_directory(tmp_path, bundle):
    src, _dest_dir, blob = bundle
    with pytest.raises(md.ModelFileError, match="does not exist"):
        md.install(_spec(tmp_path / "absent", [src], sha256_hex(blob), tmp_path))


def test_allowed_ckpt_is_scanned(tmp_path):
    src = tmp_path / "b"
    src.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = pickle.dumps(Evil(), protocol=2)
    (src / "m.ckpt").write_bytes(bad)
    dest_dir = tmp_path / "d"
    dest_dir.mkdir()
    with pytest.raises(
        md.ModelFileError, match=r"was refused: its pickle imports .*system, which can run code"
    ):
        md.install(_spec(dest_dir, [src], sha256_hex(bad), tmp_path, filename="m.ckpt", allow_ckpt=True))
    assert not (dest_dir / "m.ckpt").exists()

    good = pickle.dumps({"state_dict": {}}, protocol=2)
    (src / "m.ckpt").write_bytes(good)
    result = md.install(
        _spec(dest_dir, [src], sha256_hex(good), tmp_path, filename="m.ckpt", allow_ckpt=True)
    )
    assert result["verified_by"] == "download"


def test_unpinned_reports_what_it_saw(tmp_path, bundle):
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], None, tmp_path, allow_unpinned=True)
    result = md.install(spec)
    assert result["sha256"] == sha256_hex(blob) and result["size"] == len(blob)
    assert md.install(spec)["verified_by"] == "stat-cache"


def test_addnet_hash_matches_the_webui_definition(tmp_path):
    blob = safetensors_bytes({"lora_up": ("F16", (8, 4), os.urandom(64))}, metadata={"ss_x": "1"})
    n = int.from_bytes(blob[:8], "little")
    expected = hashlib.sha256(blob[8 + n :]).hexdigest()
    # Fed in awkward pieces (1, 3, 7 ... bytes) so the header boundary falls inside a piece.
    hasher = md.StreamHash(addnet=True)
    pos, step = 0, 1
    while pos < len(blob):
        hasher.update(memoryview(blob)[pos : pos + step])
        pos += step
        step = step * 2 + 1
    assert hasher.addnet_hexdigest() == expected
    assert hasher.hexdigest() == sha256_hex(blob)
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    assert md.hash_file(str(path), addnet=True).addnet_hexdigest() == expected


def test_lora_install_reports_addnet_hash_and_caches_it(tmp_path, bundle):
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path, addnet_hash=True)
    first = md.install(spec)
    n = int.from_bytes(blob[:8], "little")
    assert first["addnet_sha256"] == hashlib.sha256(blob[8 + n :]).hexdigest()
    second = md.install(spec)
    assert second["verified_by"] == "stat-cache" and second["addnet_sha256"] == first["addnet_sha256"]


def test_symlink_part_is_never_followed(tmp_path, bundle):
    _src, dest_dir, blob = bundle
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, dest_dir / "model.safetensors.part")
    with pytest.raises(md.ModelFileError, match="part is not a regular file"):
        md.install(_spec(dest_dir, ["http://127.0.0.1:9/x"], sha256_hex(blob), tmp_path))
    assert victim.read_text() == "keep me"


def test_symlink_at_dest_is_replaced_not_followed(tmp_path, bundle):
    src, dest_dir, blob = bundle
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(victim, dest_dir / "model.safetensors")
    result = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path))
    assert result["verified_by"] == "download"
    assert not os.path.islink(dest_dir / "model.safetensors")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 100-199/200", (100, 199, 200)),
        ("bytes */200", (None, None, 200)),
        ("bytes 0-9/*", (0, 9, None)),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_content_range(header, expected):
    assert md.parse_content_range(header) == expected


def test_progress_file_and_line(tmp_path):
    clock = iter([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0]).__next__
    path = tmp_path / "p.json"
    progress = md.Progress(str(path), "m.safetensors", clock=clock)
    progress.begin("downloading", source="https://h.example/x?sig=SECRET", total=100 * md.MB)
    progress.advance(25 * md.MB)
    doc = json.loads(path.read_text())
    assert doc["received"] == 25 * md.MB and doc["total"] == 100 * md.MB
    assert "SECRET" not in path.read_text()
    line = _action_plugin().format_progress({**doc, "rate": 25 * md.MB, "eta": 3.0})
    assert line == "m.safetensors  downloading   25.0% 25/100 MB  25.0 MB/s  ETA 0:03"
    assert _action_plugin().format_progress({"name": "x", "received": 3 * md.MB}) == "x  3 MB  0.0 MB/s"
    progress.remove()
    assert not path.exists()


def test_settled_result_is_the_module_fast_path(tmp_path, bundle, monkeypatch):
    import model_fastpath

    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o644)
    md.install(spec)
    dest = str(dest_dir / "model.safetensors")
    monkeypatch.setattr(md, "hash_file", lambda *a, **k: pytest.fail("read on the fast path"))
    settled = model_fastpath.settled_result(
        dest, sha256_hex(blob).upper() + " ", stat_cache=spec.stat_cache, mode=0o644, size=len(blob)
    )
    assert settled["verified_by"] == "stat-cache" and settled["changed"] is False
    assert settled["sha256"] == sha256_hex(blob) and settled["size"] == len(blob)
    # Same keys as the full installer reports for the same case.
    full = md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o644))
    assert set(settled) - {"warnings"} <= set(full) and full["verified_by"] == "stat-cache"
    # Anything left to do (mode, size, another pin, no cache entry) goes to the full installer.
    assert (
        model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=spec.stat_cache, mode=0o600) is None
    )
    assert model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=spec.stat_cache, size=1) is None
    assert model_fastpath.settled_result(dest, "0" * 64, stat_cache=spec.stat_cache) is None
    assert (
        model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=str(tmp_path / "none.json")) is None
    )
    assert (
        model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=spec.stat_cache, addnet=True) is None
    )


def test_owner_group_and_mode_parsing_shared_by_both_modules():
    import grp
    import pwd

    import model_fastpath

    root = pwd.getpwuid(0)
    assert model_fastpath.resolve_ids(None, None) == (-1, -1)
    assert model_fastpath.resolve_ids(root.pw_name, None) == (0, root.pw_gid)
    assert model_fastpath.resolve_ids(None, grp.getgrgid(0).gr_name) == (-1, 0)
    with pytest.raises(KeyError):
        model_fastpath.resolve_ids("sdenv-no-such-user-x", None)
    assert model_fastpath.parse_mode("0644") == 0o644
    assert model_fastpath.parse_mode(420) == 0o644
    with pytest.raises(ValueError):
        model_fastpath.parse_mode("rw-r--r--")


# --- one writer per part, true sentences (issue 12) -----------------------------------------------------


def _hold_the_lock(spec, pid_line="pid 4242"):
    """Hold the download lock through a descriptor of our own: flock treats it as another process would be."""
    lock = md.DownloadLock(spec.lock_file)
    lock.acquire(on_wait=lambda holder: pytest.fail("nobody holds it yet"))
    os.pwrite(lock.fd, f"{pid_line}\n".encode(), 0)
    return lock


def test_a_second_writer_waits_then_takes_what_the_first_installed(tmp_path, bundle):
    import shutil
    import threading

    src, dest_dir, blob = bundle
    progress = tmp_path / "progress.json"
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path, progress_file=str(progress))
    held = _hold_the_lock(spec)
    assert md.install(spec, download=False)["downloading_elsewhere"] == "pid 4242"
    outcome = {}
    waiter = threading.Thread(target=lambda: outcome.update(md.install(spec)))
    waiter.start()
    deadline = time.monotonic() + 10
    while not (progress.exists() and json.loads(progress.read_text())["phase"] == "waiting"):
        assert time.monotonic() < deadline, "the second writer did not wait"
        time.sleep(0.01)
    assert "another run (pid 4242) is writing" in json.loads(progress.read_text())["detail"]
    assert not (dest_dir / "model.safetensors.part").exists()  # it never wrote while waiting
    shutil.copyfile(src / "model.safetensors", dest_dir / "model.safetensors")  # what the holder installs
    held.release()
    waiter.join(10)
    assert outcome["verified_by"] == "hash" and outcome["waited_for"] == "pid 4242"
    assert outcome["msg"].startswith(
        "model.safetensors was installed by another run (pid 4242) while this one"
    )
    assert outcome["bytes_downloaded"] == 0 and not progress.exists()


def test_after_waiting_for_a_run_that_failed_it_downloads_itself(tmp_path, bundle):
    import threading

    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path)
    held = _hold_the_lock(spec)
    outcome = {}
    waiter = threading.Thread(target=lambda: outcome.update(md.install(spec)))
    waiter.start()
    time.sleep(0.2)
    held.release()
    waiter.join(10)
    assert outcome["verified_by"] == "download" and (dest_dir / "model.safetensors").read_bytes() == blob


def test_a_part_removed_by_something_else_is_one_sentence(tmp_path, bundle, monkeypatch):
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path)
    copy = md.Installer._copy_local

    def copy_then_lose_the_part(self, source, path, root):
        copy(self, source, path, root)
        os.unlink(spec.part)

    monkeypatch.setattr(md.Installer, "_copy_local", copy_then_lose_the_part)
    with pytest.raises(md.ModelFileError) as exc:
        md.install(spec)
    assert str(exc.value) == (
        f"{spec.part} disappeared while model.safetensors was being downloaded (something other than this run "
        "removed it); nothing was installed: run again to download it"
    )


def test_stopped_sentence_says_what_is_kept_as_it_is(tmp_path, bundle):
    src, dest_dir, blob = bundle
    installer = md.Installer(_spec(dest_dir, [src], sha256_hex(blob), tmp_path))
    assert installer.stopped_sentence("it received SIGINT") == (
        "model.safetensors was not installed: the run stopped because it received SIGINT; no partial file is kept"
    )
    Path(installer.spec.part).write_bytes(b"x" * 1234)
    assert installer.stopped_sentence("the controller that started it went away") == (
        "the download of model.safetensors stopped because the controller that started it went away; 1234 bytes "
        f"are kept in {installer.spec.part}: run again to resume"
    )
    probe = md.install(installer.spec, download=False)
    assert probe["partial_size"] == 1234 and probe["downloading_elsewhere"] is None


def test_the_lock_lives_with_the_stat_cache_not_in_the_model_folder(tmp_path, bundle):
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path)
    md.install(spec)
    assert Path(spec.lock_file).parent == Path(spec.stat_cache).parent
    assert sorted(p.name for p in dest_dir.iterdir()) == ["model.safetensors"]
    assert oct(Path(spec.lock_file).stat().st_mode & 0o777) == "0o600"


def test_controller_lines_for_waiting_and_for_a_dead_module():
    plugin = _action_plugin()
    waiting = {"name": "m", "phase": "waiting", "detail": "another run (pid 7) is writing /x.part; waiting"}
    assert plugin.format_progress(waiting) == "m  waiting: another run (pid 7) is writing /x.part; waiting"
    assert plugin.exit_reason(137) == "killed by SIGKILL"  # what /bin/sh reports for its killed child
    assert plugin.exit_reason(-15) == "killed by SIGTERM"
    assert plugin.exit_reason(1) == "exit status 1"
    assert plugin.ended_without_result({"failed": True, "_ansible_parsed": False})
    assert not plugin.ended_without_result({"failed": True, "msg": "a sentence"})


# --- issue 19 item 5: local files only inside the bundle directories, with no link below them ---------


def _refused(dest_dir, urls, sha, tmp_path, **kw):
    with pytest.raises(md.ModelFileError) as exc:
        md.install(_spec(dest_dir, urls, sha, tmp_path, **kw))
    return str(exc.value)


def test_file_url_outside_the_bundle_directories_is_never_read(bundle, tmp_path):
    src, dest_dir, _blob = bundle
    message = _refused(dest_dir, ["file:///etc/shadow"], "0" * 64, tmp_path, bundle_dirs=[str(src)])
    assert "file:///etc/shadow is outside the bundle directories (%s)" % src in message
    assert "nothing was read from it" in message
    # Nothing copied anywhere: no part, no rejected copy of /etc/shadow.
    assert list(dest_dir.iterdir()) == [] and not (tmp_path / "state" / "rejected").exists()


def test_dot_dot_out_of_a_bundle_directory_is_outside_it(bundle, tmp_path):
    src, dest_dir, _blob = bundle
    message = _refused(dest_dir, [f"file://{src}/../../../etc/shadow"], "0" * 64, tmp_path,
                       bundle_dirs=[str(src)])  # fmt: skip
    assert "is outside the bundle directories" in message and list(dest_dir.iterdir()) == []


def test_a_link_inside_a_bundle_directory_is_not_followed(bundle, tmp_path):
    src, dest_dir, blob = bundle
    secret = tmp_path / "root-only"
    secret.write_bytes(blob)
    (src / "model.safetensors").unlink()
    (src / "model.safetensors").symlink_to(secret)
    (src / "sub").symlink_to(tmp_path)
    for url in (str(src), f"file://{src}/sub/root-only"):
        message = _refused(dest_dir, [url], sha256_hex(blob), tmp_path, bundle_dirs=[str(src)])
        assert f"goes through a symbolic link inside {src}" in message, message
    assert list(dest_dir.iterdir()) == []


def test_file_url_inside_a_bundle_directory_installs(bundle, tmp_path):
    src, dest_dir, blob = bundle
    url = f"file://{src}/model.safetensors"
    result = md.install(_spec(dest_dir, [url], sha256_hex(blob), tmp_path, bundle_dirs=[str(src)]))
    assert result["verified_by"] == "download" and (dest_dir / "model.safetensors").read_bytes() == blob


# --- a rejected download: root-only, in the state directory ---------------------------------------------


def test_rejected_on_another_file_system_is_copied_then_removed(bundle, tmp_path, monkeypatch):
    src, dest_dir, blob = bundle
    real_replace = os.replace

    def cross_device(source, target, **kw):
        if kw.get("dst_dir_fd") is not None and kw.get("src_dir_fd") is None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(source, target, **kw)

    monkeypatch.setattr(md.os, "replace", cross_device)
    message = _refused(dest_dir, [str(src)], "0" * 64, tmp_path)
    rejected = tmp_path / "state" / "rejected" / "model.safetensors.rejected"
    assert f"it was kept at {rejected}" in message
    assert rejected.read_bytes() == blob and rejected.stat().st_mode & 0o777 == 0o600
    assert list(dest_dir.iterdir()) == [] and os.listdir(rejected.parent) == [rejected.name]


def test_a_rejected_directory_that_is_a_link_is_not_used(bundle, tmp_path):
    src, dest_dir, _blob = bundle
    (tmp_path / "state").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state" / "rejected").symlink_to(elsewhere)
    message = _refused(dest_dir, [str(src)], "0" * 64, tmp_path)
    assert f"it was removed, since {tmp_path / 'state' / 'rejected'} cannot hold it" in message
    assert list(elsewhere.iterdir()) == [] and list(dest_dir.iterdir()) == []


def test_a_part_removed_before_it_is_set_aside_is_the_disappeared_sentence(bundle, tmp_path, monkeypatch):
    src, dest_dir, _blob = bundle
    spec = _spec(dest_dir, [src], "0" * 64, tmp_path)
    private_dir = md._private_dir

    def lose_the_part_first(path):
        os.unlink(spec.part)
        return private_dir(path)

    monkeypatch.setattr(md, "_private_dir", lose_the_part_first)
    with pytest.raises(md.ModelFileError, match=r"disappeared while model\.safetensors was being downloaded"):
        md.install(spec)


@pytest.mark.parametrize("folder", ["Lora", "Stable-diffusion"])
def test_a_model_folder_linked_to_a_root_owned_directory_gets_nothing(tmp_path, bundle, foreign, folder):
    src, _, blob = bundle
    # The dummy's WebUI tree, its model folder replaced by a link to a directory root owns.
    models = tmp_path / "home" / "webui" / "models"
    models.mkdir(parents=True)
    for path in (tmp_path / "home", models.parent, models):
        foreign(path)
    rootdir = tmp_path / "root-only"
    rootdir.mkdir(mode=0o700)
    (models / folder).symlink_to(rootdir)
    foreign(models / folder)
    spec = _spec(models / folder, [src], sha256_hex(blob), tmp_path, uid=OTHER_UID, gid=OTHER_UID)
    with pytest.raises(
        md.ModelFileError, match=rf"refusing to install model.safetensors: .*/{folder} is a symbolic"
    ):
        md.install(spec)
    assert list(rootdir.iterdir()) == []
    assert rootdir.stat().st_uid == RUNNER_UID


def test_a_folder_swapped_for_a_link_after_it_was_opened_changes_nothing(tmp_path, bundle):
    # Every step works in the folder's descriptor: renaming it and linking its name elsewhere mid-run
    # sends nothing to the link's target.
    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path)
    installer = md.Installer(spec)
    installer._validate()
    moved = tmp_path / "moved"
    dest_dir.rename(moved)
    target = tmp_path / "target"
    target.mkdir()
    dest_dir.symlink_to(target)
    installer._download_any()
    installer.close()
    assert (moved / "model.safetensors").read_bytes() == blob
    assert list(target.iterdir()) == []


def test_no_fast_path_through_a_model_folder_linked_elsewhere(tmp_path, bundle, foreign):
    # The folder moved and its name linked to it by another account: the same file (inode, size, mtime) is
    # behind the link, but root does not look through the dummy's links, so the full module decides (and
    # refuses in a sentence).
    import model_fastpath

    src, dest_dir, blob = bundle
    spec = _spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o644)
    md.install(spec)
    dest = str(dest_dir / "model.safetensors")
    assert model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=spec.stat_cache) is not None
    moved = tmp_path / "moved"
    dest_dir.rename(moved)
    dest_dir.symlink_to(moved)
    foreign(dest_dir)
    assert model_fastpath.settled_result(dest, sha256_hex(blob), stat_cache=spec.stat_cache) is None
    with pytest.raises(md.ModelFileError, match="is a symbolic link"):
        md.install(_spec(dest_dir, [src], sha256_hex(blob), tmp_path, mode=0o644))
