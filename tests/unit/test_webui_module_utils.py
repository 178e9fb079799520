"""Unit tests of the webui role's module_utils: config merge, CLIP tokenizer derivation, venv inputs and
plan, pinned archives, and the git tree rules (against local repositories)."""

import gzip
import hashlib
import http.server
import json
import os
import subprocess
import threading
import zipfile
from pathlib import Path

import clip_tokenizer_files as ctf
import git_tree_id as gti
import pytest
import venv_lock
import webui_config_merge as cm
import webui_git_tree as gt
import webui_venv_plan as vp
import yaml

ROOT = Path(__file__).resolve().parents[2]


def lock():
    return yaml.safe_load((ROOT / "inventory/group_vars/all/lock.yml").read_text())["sdenv_lock"]


# --- config.json / ui-config.json merge ---------------------------------------------------------------


def test_merge_sets_defaults_and_keeps_every_other_key_in_place():
    current = {"user_key": [1, 2], "sd_model_checkpoint": "other.safetensors", "z": None}
    merged, changed = cm.merge(
        current, {"sd_model_checkpoint": "bra.safetensors", "auto_launch_browser": "Disable"}
    )
    assert list(merged) == ["user_key", "sd_model_checkpoint", "z", "auto_launch_browser"]
    assert merged["user_key"] == [1, 2] and merged["z"] is None
    assert changed == ["auto_launch_browser", "sd_model_checkpoint"]
    assert cm.merge(merged, {"auto_launch_browser": "Disable"})[1] == []


def test_merge_treats_a_value_of_another_type_as_a_change():
    assert cm.merge({"steps": "20"}, {"steps": 20})[1] == ["steps"]
    assert cm.merge({"flag": 1}, {"flag": True})[1] == ["flag"]


def test_load_json_object_missing_empty_and_bad_files(tmp_path):
    assert cm.load_json_object(str(tmp_path / "absent.json")) == {}
    (tmp_path / "empty.json").write_text("  \n")
    assert cm.load_json_object(str(tmp_path / "empty.json")) == {}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(cm.ConfigMergeError, match=r"bad.json is not valid JSON .*move it aside"):
        cm.load_json_object(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(cm.ConfigMergeError, match=r"holds a JSON list, not an object"):
        cm.load_json_object(str(tmp_path / "list.json"))


def test_dumps_matches_the_webui_and_writes_atomically(tmp_path):
    path = tmp_path / "config.json"
    cm.write_atomic(str(path), cm.dumps({"a": "é"}).encode("utf-8"))
    assert path.read_text(encoding="utf-8") == '{\n    "a": "é"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


# --- CLIP tokenizer files -----------------------------------------------------------------------------


def clip_archive(tmp_path, bpe_text, top="CLIP-abc"):
    path = tmp_path / "clip.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/setup.py", "")
        archive.writestr(f"{top}/clip/bpe_simple_vocab_16e6.txt.gz", gzip.compress(bpe_text.encode()))
    return path


def test_bytes_to_unicode_is_gpt2s_table():
    table = ctf.bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert list(table.values())[:3] == ["!", '"', "#"]
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


def test_vocab_and_merges_are_laid_out_as_clip_and_the_hub_do(tmp_path):
    files = ctf.derived_files(clip_archive(tmp_path, "header line\ni n\nt h\nth e</w>\n"))
    vocab = json.loads(files["vocab.json"])
    assert len(vocab) == 256 * 2 + 3 + 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert [vocab["in"], vocab["th"], vocab["the</w>"]] == [512, 513, 514]
    assert [vocab["<|startoftext|>"], vocab["<|endoftext|>"]] == [515, 516]
    assert not files["vocab.json"].endswith(b"\n") and b", " in files["vocab.json"]
    assert files["merges.txt"] == b"#version: 0.2\ni n\nt h\nth e</w>\n"


def test_only_clips_48894_merges_are_kept(tmp_path):
    merges = [f"a{i} b{i}" for i in range(ctf.MERGE_LIMIT + 5)]
    files = ctf.derived_files(clip_archive(tmp_path, "header\n" + "\n".join(merges) + "\n"))
    assert files["merges.txt"].count(b"\n") == 1 + 48894
    assert len(json.loads(files["vocab.json"])) == 49408


def test_an_archive_without_the_bpe_table_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/README", "")
    with pytest.raises(ctf.TokenizerCacheError, match=r"has no clip/bpe_simple_vocab_16e6.txt.gz"):
        ctf.derived_files(path)
    (tmp_path / "junk.zip").write_bytes(b"<html>")
    with pytest.raises(ctf.TokenizerCacheError, match=r"cannot be read"):
        ctf.derived_files(tmp_path / "junk.zip")


@pytest.mark.skipif(
    not os.environ.get("SDENV_CLIP_BPE"), reason="set SDENV_CLIP_BPE to a real bpe_simple_vocab_16e6.txt.gz"
)
def test_the_real_bpe_table_gives_the_hubs_files_byte_for_byte(tmp_path):
    with zipfile.ZipFile(tmp_path / "clip.zip", "w") as archive:
        archive.write(os.environ["SDENV_CLIP_BPE"], "CLIP-x/clip/bpe_simple_vocab_16e6.txt.gz")
    files = ctf.derived_files(tmp_path / "clip.zip")
    pinned = lock()["clip_tokenizer"]["sha256"]
    assert {n: hashlib.sha256(d).hexdigest() for n, d in files.items()} == {n: pinned[n] for n in files}


def test_the_shipped_json_files_match_the_lock():
    pinned = lock()["clip_tokenizer"]["sha256"]
    shipped = ROOT / "roles/webui/files/clip-vit-large-patch14"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(set(pinned) - {"vocab.json", "merges.txt"})
    for path in shipped.iterdir():
        assert ctf.sha256_file(path) == pinned[path.name], path.name
    tokenizer = json.loads((shipped / "tokenizer_config.json").read_text())
    assert (tokenizer["model_max_length"], tokenizer["tokenizer_class"]) == (77, "CLIPTokenizer")
    config = json.loads((shipped / "config.json").read_text())
    assert (config["text_config"]["hidden_size"], config["text_config"]["vocab_size"]) == (768, 49408)
    assert (config["vision_config"]["patch_size"], config["projection_dim"]) == (14, 768)


def test_check_hashes_refuses_a_wrong_or_unpinned_file():
    files = {"vocab.json": b"x"}
    ctf.check_hashes(files, {"vocab.json": hashlib.sha256(b"x").hexdigest()})
    with pytest.raises(ctf.TokenizerCacheError, match=r"vocab.json has sha256 .* the lock pins 00"):
        ctf.check_hashes(files, {"vocab.json": "00"})
    with pytest.raises(ctf.TokenizerCacheError, match=r"extra.json has no sha256 in the lock"):
        ctf.check_hashes({**files, "extra.json": b""}, {"vocab.json": hashlib.sha256(b"x").hexdigest()})
    with pytest.raises(ctf.TokenizerCacheError, match=r"merges.txt pinned in the lock has no source"):
        ctf.check_hashes({}, {"merges.txt": "00"})


def test_the_cache_layout_is_huggingface_hubs():
    plan = ctf.planned_files("/h", "rev1", {"vocab.json": b"v"})
    assert plan == {
        "/h/hub/version.txt": b"1",
        "/h/hub/models--openai--clip-vit-large-patch14/refs/main": b"rev1",
        "/h/hub/models--openai--clip-vit-large-patch14/snapshots/rev1/vocab.json": b"v",
    }


# --- venv inputs, marker and plan ---------------------------------------------------------------------


def venv_inputs(**changes):
    values = {"interpreter": "/usr/bin/python3.10", "interpreter_version": "3.10.14", "lock_sha256": "l" * 64,
              "requirements_sha256": "r" * 64, "clip_tree": "t" * 40, "uv_version": "0.13.8", "extra": None}  # fmt: skip
    values.update(changes)
    return vp.inputs(*values.values())


def test_the_inputs_digest_is_stable_and_moves_with_each_input():
    base = venv_inputs()
    assert vp.digest(base) == vp.digest(json.loads(json.dumps(base, sort_keys=True)))
    changed = [
        venv_inputs(interpreter="/usr/bin/python3.11"),
        venv_inputs(interpreter_version="3.10.15"),
        venv_inputs(lock_sha256="m" * 64),
        venv_inputs(requirements_sha256="s" * 64),
        venv_inputs(clip_tree="u" * 40),
        venv_inputs(uv_version="0.13.9"),
        venv_inputs(extra={"jsonmerge": ["w" * 64]}),
    ]
    assert len({vp.digest(base), *map(vp.digest, changed)}) == 8


def test_a_venv_is_current_only_with_a_matching_marker(tmp_path):
    wanted = venv_inputs(interpreter="/p")
    assert not vp.is_current(str(tmp_path), wanted)
    vp.write_marker(str(tmp_path), wanted)
    assert vp.is_current(str(tmp_path), wanted)
    assert not vp.is_current(str(tmp_path), {**wanted, "interpreter": "/q"})
    (tmp_path / vp.MARKER).write_text("{half")
    assert not vp.is_current(str(tmp_path), wanted)


def test_package_sources():
    assert vp.uv_source_args("", "/wh") == ["--offline", "--no-index", "--find-links", "/wh"]
    assert vp.uv_source_args("https://idx/simple", "", "") == ["--index-url", "https://idx/simple"]
    assert vp.uv_source_args("", "/wh", "https://torch") == [
        "--offline",
        "--no-index",
        "--find-links",
        "/wh",
    ], "a wheelhouse bootstrap must not reach the torch index"
    assert vp.uv_source_args("", "", "https://torch")[-4:] == [
        "--extra-index-url", "https://torch", "--index-strategy", "unsafe-best-match"
    ]  # fmt: skip
    assert vp.pip_source_env("https://idx", "/wh") == {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wh"}


def test_the_build_steps_sync_the_lock_then_add_clip_from_its_archive():
    steps = vp.build_steps("/py", "/w/venv", "/w", "/uv", "/l/lock.txt", "/a/CLIP.zip", ["--offline"])
    assert [name for name, _, _ in steps] == [
        "create the venv", "install the locked packages (uv pip sync --require-hashes)",
        "install CLIP from its pinned archive",
    ]  # fmt: skip
    argv = [a for _, a, _ in steps]
    assert argv[0] == ["/py", "-m", "venv", "--without-pip", "/w/venv"]
    assert argv[1][:4] == ["/uv", "pip", "sync", "--require-hashes"] and argv[1][-2:] == [
        "--offline",
        "/l/lock.txt",
    ]
    assert "--no-deps" in argv[2] and "--no-build-isolation" in argv[2] and argv[2][-1] == "/a/CLIP.zip"


def test_a_bundle_built_wheel_joins_its_locked_entry():
    text = "a==1 \\\n    --hash=sha256:aa\n    # via x\nb_c==2 \\\n    --hash=sha256:bb\n"
    out = vp.effective_lock(text, {"b-c": ["cc"]})
    packages = venv_lock.parse_packages(out)
    assert packages["b-c"]["hashes"] == ["cc", "bb"] and packages["a"]["hashes"] == ["aa"]
    assert vp.effective_lock(text, {}) == text


def zip_of(path, top, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}", data)
    return path


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_archives_download_once_and_are_checked_by_tree(tmp_path, http_dir):
    served, url, requests = http_dir
    zip_of(served / "CLIP.zip", "CLIP-c", {"a.txt": b"a"})
    tree = gti.zip_tree_id(served / "CLIP.zip")[0]
    spec = {"url": f"{url}/CLIP.zip", "file": "CLIP.zip", "tree": tree, "sha256": ""}
    cache = tmp_path / "cache"
    _, digest, fetched = vp.locate_archive(spec, "", str(cache))
    assert fetched and digest == hashlib.sha256((served / "CLIP.zip").read_bytes()).hexdigest()
    assert vp.locate_archive(spec, "", str(cache))[2] is False and len(requests) == 1
    zip_of(cache / "CLIP.zip", "CLIP-c", {"a.txt": b"altered"})
    assert vp.locate_archive(spec, "", str(cache))[2] is True, (
        "a cached archive with another tree is re-fetched"
    )
    (cache / "CLIP.zip").unlink()
    with pytest.raises(vp.VenvError, match=r"gave an archive that is not the pinned one .*holds git tree"):
        vp.locate_archive({**spec, "tree": "0" * 40}, "", str(cache))
    assert sorted(os.listdir(cache)) == []


def test_a_local_archive_directory_is_used_without_network(tmp_path):
    zip_of(tmp_path / "CLIP.zip", "CLIP-c", {"a.txt": b"a"})
    spec = {"url": "https://unreachable.invalid/CLIP.zip", "file": "CLIP.zip",
            "tree": gti.zip_tree_id(tmp_path / "CLIP.zip")[0], "sha256": ""}  # fmt: skip
    assert vp.locate_archive(spec, str(tmp_path), str(tmp_path / "c"))[:3:2] == (
        str(tmp_path / "CLIP.zip"),
        False,
    )
    with pytest.raises(vp.VenvError, match=r"The directory .* has no oc.zip"):
        vp.locate_archive({**spec, "file": "oc.zip"}, str(tmp_path), str(tmp_path / "c"))
    with pytest.raises(vp.VenvError, match=r"holds git tree .* the lock pins"):
        vp.locate_archive({**spec, "tree": "1" * 40}, str(tmp_path), str(tmp_path / "c"))
    with pytest.raises(vp.VenvError, match=r"not http"):
        vp.locate_archive({**spec, "url": "ftp://x/y.zip", "file": "y.zip"}, "", str(tmp_path / "c"))


# --- git tree -----------------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()  # fmt: skip


@pytest.fixture
def origin(tmp_path):
    """A repository with two commits; returns (url, [sha1, sha2])."""
    work = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(work))
    shas = []
    for text in ("one\n", "two\n"):
        (work / "file.txt").write_text(text)
        (work / "webui-user.sh").write_text("# tracked template\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", text.strip(), cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    return str(work), shas


def test_porcelain_parsing_handles_renames():
    assert gt.parse_porcelain(" M a.py\0R  new.py\0old.py\0D  gone\0") == ["a.py", "new.py", "gone"]


def test_a_tree_is_cloned_at_the_pin_and_then_left_alone(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "home" / "tree"
    result = gt.ensure_tree(str(dest), url, shas[0])
    assert result["action"] == "clone" and gt.head(str(dest)) == shas[0]
    again = gt.ensure_tree(str(dest), url, shas[0])
    assert (again["changed"], again["fetched"]) == (False, False)
    moved = gt.ensure_tree(str(dest), url, shas[1])
    assert moved["action"] == "checkout" and gt.head(str(dest)) == shas[1] and not moved["fetched"]


def test_a_tree_comes_from_a_local_source_but_names_the_locks_url(tmp_path, origin):
    """An offline bundle's bare repository is the source; origin still says the lock's URL."""
    url, shas = origin
    source = tmp_path / "bundle" / "tree.git"
    git("clone", "-q", "--bare", url, str(source))
    dest = tmp_path / "home" / "tree"
    lock_url = "https://example.invalid/upstream.git"
    result = gt.ensure_tree(str(dest), lock_url, shas[0], source=str(source))
    assert result["action"] == "clone" and gt.head(str(dest)) == shas[0]
    assert git("remote", "get-url", "origin", cwd=dest) == lock_url
    assert gt.ensure_tree(str(dest), lock_url, shas[0], source=str(source))["changed"] is False
    moved = gt.ensure_tree(str(dest), lock_url, shas[1], source=str(source))
    assert moved["action"] == "checkout" and gt.head(str(dest)) == shas[1]
    upload_pack = gt.from_source(str(source))
    assert upload_pack == ["--no-local", f"--upload-pack=git -c safe.directory={source} upload-pack"]


def test_check_mode_changes_nothing(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    assert gt.ensure_tree(str(dest), url, shas[0], check_mode=True)["changed"] is True
    assert not dest.exists()


def test_local_changes_are_refused_by_name_and_reset_with_force(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    gt.ensure_tree(str(dest), url, shas[0])
    (dest / "file.txt").write_text("mine\n")
    (dest / "webui-user.sh").write_text("# written by the toolkit\n")
    with pytest.raises(gt.GitTreeError) as refused:
        gt.ensure_tree(str(dest), url, shas[1], label="WebUI tree", managed=["webui-user.sh"])
    assert str(refused.value) == (
        f"The WebUI tree at {dest} has local changes to file.txt: commit or move them away, or run again "
        "with FORCE=yes to reset them to the pinned commit."
    )
    assert (dest / "file.txt").read_text() == "mine\n" and gt.head(str(dest)) == shas[0]
    forced = gt.ensure_tree(str(dest), url, shas[1], force=True, managed=["webui-user.sh"])
    assert forced["reset_files"] == ["file.txt"] and (dest / "file.txt").read_text() == "two\n"


def test_a_managed_file_never_blocks_a_checkout(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    gt.ensure_tree(str(dest), url, shas[0])
    (dest / "webui-user.sh").write_text("# written by the toolkit\n")
    assert gt.ensure_tree(str(dest), url, shas[0], managed=["webui-user.sh"])["changed"] is False
    assert gt.ensure_tree(str(dest), url, shas[1], managed=["webui-user.sh"])["action"] == "checkout"


def test_a_missing_commit_is_fetched_once_or_named(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    gt.ensure_tree(str(dest), url, shas[0])
    (Path(url) / "file.txt").write_text("three\n")
    git("commit", "-qam", "three", cwd=url)
    third = git("rev-parse", "HEAD", cwd=url)
    result = gt.ensure_tree(str(dest), url, third)
    assert result["fetched"] and gt.head(str(dest)) == third
    with pytest.raises(
        gt.GitTreeError, match=rf"The pinned commit {'e' * 40} is not in {url}: check the lock"
    ):
        gt.ensure_tree(str(dest), url, "e" * 40)
    with pytest.raises(gt.GitTreeError, match=r"is not in"):
        gt.ensure_tree(str(tmp_path / "fresh"), url, "e" * 40)
    assert not (tmp_path / "fresh").exists()
    assert [p for p in os.listdir(tmp_path) if gt.CLONE_PREFIX in p] == []


def test_a_changed_origin_url_is_set(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    gt.ensure_tree(str(dest), url, shas[0])
    mirror = tmp_path / "mirror.git"
    git("clone", "-q", "--bare", url, str(mirror))
    result = gt.ensure_tree(str(dest), str(mirror), shas[0])
    assert result["action"] == "set-url" and git("config", "--get", "remote.origin.url", cwd=dest) == str(
        mirror
    )


def test_leftovers_of_a_killed_clone_go_and_a_foreign_directory_is_refused(tmp_path, origin):
    url, shas = origin
    stale = tmp_path / f".tree{gt.CLONE_PREFIX}abc123"
    (stale / "partial").mkdir(parents=True)
    gt.ensure_tree(str(tmp_path / "tree"), url, shas[0])
    assert not stale.exists()
    other = tmp_path / "other"
    (other / "notes.txt").parent.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(gt.GitTreeError, match=r"exists but is not a git clone: move it aside"):
        gt.ensure_tree(str(other), url, shas[0])
    (tmp_path / "empty").mkdir()
    assert gt.ensure_tree(str(tmp_path / "empty"), url, shas[0])["action"] == "clone"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_clone_has_the_modes_git_clone_gives(tmp_path, origin, umask):
    url, shas = origin
    old = os.umask(umask)
    try:
        gt.ensure_tree(str(tmp_path / "tree"), url, shas[0])
        git("clone", "-q", url, str(tmp_path / "plain"))
    finally:
        os.umask(old)
    for name in ("", ".git", "file.txt"):
        ours, plain = tmp_path / "tree" / name, tmp_path / "plain" / name
        assert oct(ours.stat().st_mode) == oct(plain.stat().st_mode), name
    assert (tmp_path / "tree").stat().st_mode & 0o777 == 0o777 & ~umask


def test_an_unreachable_repository_is_named_with_what_to_do(tmp_path, origin, monkeypatch):
    url, shas = origin
    monkeypatch.chdir(tmp_path)  # the controller's working directory must not be what the message names
    dest = tmp_path / "home" / "tree"
    gone = str(tmp_path / "no-such-repository")
    with pytest.raises(gt.GitTreeError) as refused:
        gt.ensure_tree(str(dest), gone, shas[0], label="sub-repository BLIP")
    message = str(refused.value)
    assert message.startswith(f"Could not clone the sub-repository BLIP from {gone} into {dest} (")
    assert "point the lock (sdenv_lock) at a mirror" in message and "BUNDLE=dir" in message, message
    assert not dest.exists() and [p for p in os.listdir(dest.parent) if gt.CLONE_PREFIX in p] == []

    gt.ensure_tree(str(dest), url, shas[0])
    with pytest.raises(gt.GitTreeError, match=rf"^Could not fetch the tree from {gone} into {dest} \("):
        gt.ensure_tree(str(dest), gone, "e" * 40)


def test_a_failing_git_command_names_the_tree_it_ran_in(tmp_path, origin):
    url, shas = origin
    dest = tmp_path / "tree"
    gt.ensure_tree(str(dest), url, shas[0])
    with pytest.raises(gt.GitTreeError, match=rf"^git rev-parse NOPE failed in {dest}: "):
        gt.run_git(["rev-parse", "NOPE"], cwd=str(dest))


def test_the_launchers_own_preparation_is_judged_by_what_it_prints(tmp_path):
    """v1.10.1's webui.sh exits 0 even when launch.py fails (its restart loop ends with a test)."""
    log_path = tmp_path / "bootstrap.log"
    with open(log_path, "w", encoding="utf-8") as log:
        vp.run_launch(["sh", "-c", f"echo '{vp.LAUNCH_FINISHED}'"], str(tmp_path), dict(os.environ), log)
        with pytest.raises(vp.VenvError, match=r"did not finish .*webui.sh exits 0 regardless"):
            vp.run_launch(["sh", "-c", "echo RuntimeError: clone failed; exit 0"], str(tmp_path),
                          dict(os.environ), log)  # fmt: skip


@pytest.fixture
def nested(tmp_path, origin):
    """A WebUI-like tree (a clone of origin at its second commit) with a sub-repository directory inside it,
    as repositories/<dir> sits inside the WebUI's own repository. Returns (parent, sub, url, shas)."""
    url, shas = origin
    parent = tmp_path / "webui"
    gt.ensure_tree(str(parent), url, shas[1])
    sub = parent / "repositories" / "sub"
    sub.mkdir(parents=True)
    return parent, sub, url, shas


@pytest.mark.parametrize("broken", ["none", "empty dir", "empty file", "not a repository"])
def test_a_directory_inside_another_repository_is_not_a_clone(nested, broken):
    parent, sub, _, _ = nested
    if broken == "empty dir":
        (sub / ".git").mkdir()
    elif broken == "empty file":
        (sub / ".git").write_text("")
    elif broken == "not a repository":
        (sub / ".git").mkdir()
        (sub / ".git" / "leftover").write_text("x")
    assert gt.is_clone(str(sub)) is False
    assert gt.is_clone(str(parent)) is True
    # ...and no git command run for it falls through to the parent's repository.
    with pytest.raises(gt.GitTreeError, match=r"git rev-parse HEAD failed in .*repositories/sub: fatal"):
        gt.head(str(sub))


@pytest.mark.parametrize("broken", ["empty dir", "not a repository"])
def test_a_sub_repository_with_a_broken_git_is_repaired_and_the_parent_left_alone(nested, tmp_path, broken):
    parent, sub, url, shas = nested
    (sub / ".git").mkdir()
    if broken == "not a repository":
        (sub / ".git" / "leftover").write_text("x")
    (sub / "file.txt").write_text("one\n")  # what the sub-repository's pinned commit has
    sub_url = str(tmp_path / "sub-origin.git")
    git("clone", "-q", "--bare", url, sub_url)
    result = gt.ensure_tree(str(sub), sub_url, shas[0], label="sub-repository sub")
    assert result["action"] == "repair" and result["repaired"] and result["reset_files"] == []
    assert gt.head(str(sub)) == shas[0] and (sub / "webui-user.sh").exists(), (
        "a missing file was not restored"
    )
    assert git("config", "--get", "remote.origin.url", cwd=sub) == sub_url
    assert bool(result["broken_git_kept"]) == (broken == "not a repository")
    # The parent (the WebUI's tree) kept its own commit and origin: nothing ran in it.
    assert gt.head(str(parent)) == shas[1] and git("config", "--get", "remote.origin.url", cwd=parent) == url
    assert gt.ensure_tree(str(sub), sub_url, shas[0])["changed"] is False


def test_a_repaired_tree_names_the_files_that_differ(nested, origin):
    _, sub, url, shas = nested
    (sub / ".git").mkdir()
    (sub / "file.txt").write_text("mine\n")
    with pytest.raises(gt.GitTreeError, match=r"has local changes to file.txt: .*FORCE=yes"):
        gt.ensure_tree(str(sub), url, shas[0], label="sub-repository sub")
    assert (sub / "file.txt").read_text() == "mine\n"
    forced = gt.ensure_tree(str(sub), url, shas[0], force=True)
    assert (
        forced["reset_files"] == ["file.txt", "webui-user.sh"] and (sub / "file.txt").read_text() == "one\n"
    )


def test_a_clone_a_live_run_is_making_is_never_removed(tmp_path, origin):
    url, shas = origin
    live = tmp_path / f".tree{gt.CLONE_PREFIX}{gt.clone_owner_tag()}-abc123"
    (live / ".git").mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    dead = tmp_path / f".tree{gt.CLONE_PREFIX}{proc.pid}-12345-abc123"
    (dead / "partial").mkdir(parents=True)
    reused = tmp_path / f".tree{gt.CLONE_PREFIX}{os.getpid()}-1-abc123"  # this pid, another start time
    reused.mkdir()
    gt.ensure_tree(str(tmp_path / "tree"), url, shas[0])
    assert live.exists(), "another live run's clone in progress was removed"
    assert not dead.exists() and not reused.exists()
