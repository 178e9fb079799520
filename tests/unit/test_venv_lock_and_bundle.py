"""Unit tests of the venv lock (format, inputs digest, the committed files), archive tree ids, wheel choice per
platform, the package index client, uv's install and the offline bundle's bookkeeping and preflight."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import bundle_build as bb
import bundle_layout as bl
import git_tree_id as gti
import package_index as pi
import pytest
import uv_install
import venv_lock as vl
import wheel_tags as wt
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = ROOT / "inventory" / "group_vars" / "all" / "venv-lock"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}  # fmt: skip


def lock():
    return yaml.safe_load((ROOT / "inventory/group_vars/all/lock.yml").read_text())["sdenv_lock"]


# --- the committed venv locks --------------------------------------------------------------------------


@pytest.mark.parametrize("platform", sorted(vl.PYTHONS))
def test_every_committed_lock_was_resolved_from_todays_lock_yml(platform):
    for python in vl.PYTHONS[platform]:
        name = vl.lock_file_name(platform, python)
        text = (LOCK_DIR / name).read_text()
        recorded = vl.check_lock_text(text, lock(), platform, python, name)
        assert recorded["webui_commit"] == lock()["webui"]["commit"]
        packages = vl.parse_packages(text)
        assert packages["torch"]["version"] == lock()["webui_venv"]["torch"][platform]["torch"]
        assert packages["pip"]["version"] == lock()["webui_venv"]["pip"]
        assert packages["open-clip-torch"]["version"] == "2.20.0"
        assert "clip" not in packages, "CLIP comes from its archive, never from the index"
        assert all(len(h) == 64 for p in packages.values() for h in p["hashes"])


def test_a_changed_pin_or_requirements_file_makes_the_lock_stale():
    name = vl.lock_file_name("Linux-x86_64", "3.11")
    text = (LOCK_DIR / name).read_text()
    changed = lock()
    changed["webui_venv"]["torch"]["Linux-x86_64"]["torch"] = "2.2.0"
    with pytest.raises(
        vl.LockError,
        match=r"Linux-x86_64-py3.11.txt was resolved from other inputs .*torch.* run make lock-venv",
    ):
        vl.check_lock_text(text, changed, "Linux-x86_64", "3.11", name)
    with pytest.raises(vl.LockError, match=r"requirements_sha256 changed"):
        vl.check_lock_text(text, lock(), "Linux-x86_64", "3.11", name, requirements_sha256="0" * 64)
    edited = text.replace("# inputs-digest: ", "# inputs-digest: 0", 1)
    with pytest.raises(vl.LockError, match=r"run make lock-venv"):
        vl.check_lock_text(edited, lock(), "Linux-x86_64", "3.11", name)
    with pytest.raises(vl.LockError, match=r"not one make lock-venv wrote"):
        vl.check_lock_text("a==1 --hash=sha256:" + "0" * 64, lock(), "Linux-x86_64", "3.11", name)


def test_the_uv_input_carries_every_pin_and_the_archive_requirements():
    inputs = vl.lock_inputs(lock(), "Darwin-arm64", "3.10", "r" * 64)
    text = vl.requirements_in(inputs, "gradio==3.41.2\ntorch\n", {"clip": "ftfy\nregex\n# c\n"})
    lines = text.splitlines()
    for wanted in ("gradio==3.41.2", "torch==2.3.1", "torchvision==0.18.1", "setuptools==69.5.1", "wheel==0.45.1",
                   f"pip=={lock()['webui_venv']['pip']}", "ftfy", "regex"):  # fmt: skip
        assert wanted in lines
    assert "# c" not in lines
    assert vl.parse_header(vl.header(inputs, "0.13.8"))[1] == inputs


def test_parse_packages_joins_continuations_and_skips_comments():
    text = "# header\nA_b==1.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via c\nc==2 --hash=sha256:cc\n"
    assert vl.parse_packages(text) == {
        "a-b": {"name": "A_b", "version": "1.0", "hashes": ["aa", "bb"]},
        "c": {"name": "c", "version": "2", "hashes": ["cc"]},
    }
    with pytest.raises(vl.LockError, match="has no --hash"):
        vl.parse_packages("d==1\n")


# --- archives by git tree id --------------------------------------------------------------------------


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, check=True).stdout


def test_a_git_archive_reproduces_the_commits_tree_with_modes(tmp_path):
    work = tmp_path / "repo"
    (work / "pkg" / "sub").mkdir(parents=True)
    (work / "pkg" / "__init__.py").write_text("x = 1\n")
    (work / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    (work / "link").symlink_to("run.sh")
    (work / "pkg.txt").write_text("sorted before pkg/ by git's rule\n")
    git("init", "-q", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "c", cwd=work)
    tree = git("rev-parse", "HEAD^{tree}", cwd=work).decode().strip()
    archive = tmp_path / "a.zip"
    archive.write_bytes(git("archive", "--format=zip", "--prefix=repo-abc/", "HEAD", cwd=work))
    assert gti.zip_tree_id(archive) == (tree, "repo-abc")

    altered = tmp_path / "b.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(altered, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("run.sh"):
                info.external_attr = 0o100644 << 16  # the executable bit lost
            out.writestr(info, data)
    assert gti.zip_tree_id(altered)[0] != tree
    two_tops = tmp_path / "c.zip"
    with zipfile.ZipFile(two_tops, "w") as out:
        out.writestr("a/x", "1")
        out.writestr("b/y", "2")
    with pytest.raises(gti.TreeIdError, match="exactly one top directory"):
        gti.zip_tree_id(two_tops)


# --- wheels per platform -------------------------------------------------------------------------------


def entry(name, digest):
    return {"filename": name, "url": f"https://f/{name}", "sha256": digest, "requires_python": ""}


def test_the_best_locked_wheel_for_the_target_is_chosen():
    files = [
        entry("numpy-1.26.2-cp310-cp310-macosx_11_0_arm64.whl", "a"),
        entry("numpy-1.26.2-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "b"),
        entry("numpy-1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "c"),
        entry("numpy-1.26.2-cp311-cp311-musllinux_1_1_x86_64.whl", "d"),
        entry("numpy-1.26.2-cp311-cp311-manylinux_2_34_x86_64.whl", "e"),
        entry("numpy-1.26.2.tar.gz", "f"),
    ]
    hashes = "abcdef"
    assert wt.choose_file(files, hashes, wt.target_tags("Darwin-arm64", "3.10"))["sha256"] == "a"
    assert wt.choose_file(files, hashes, wt.target_tags("Linux-x86_64", "3.11"))["sha256"] == "c", (
        "manylinux_2_34 is newer than the 2_28 target"
    )
    assert wt.choose_file(files, hashes, wt.target_tags("Linux-aarch64", "3.11"))["sha256"] == "f", (
        "only the sdist fits"
    )
    assert wt.choose_file(files, "ab", wt.target_tags("Linux-x86_64", "3.11")) is None, (
        "unlocked files never count"
    )
    assert wt.is_pure_wheel("jsonmerge-1.8.0-py3-none-any.whl")
    assert not wt.is_pure_wheel("opencv_python-4.11.0.86-cp37-abi3-macosx_13_0_arm64.whl")


def test_the_simple_index_page_gives_names_urls_and_hashes():
    page = ('<html><body><a href="../../files/uv-0.13.8-py3-none-any.whl#sha256=AB12" '
            'data-requires-python="&gt;=3.8">uv-0.13.8-py3-none-any.whl</a><br/>'
            '<a href="https://files.example/x/uv-0.13.8.tar.gz">uv-0.13.8.tar.gz</a></body></html>')  # fmt: skip
    files = pi.parse_simple_page(page, "http://127.0.0.1:1/simple/uv/")
    assert files[0] == {"filename": "uv-0.13.8-py3-none-any.whl", "url": "http://127.0.0.1:1/files/uv-0.13.8-py3-none-any.whl",
                        "sha256": "ab12", "requires_python": ">=3.8"}  # fmt: skip
    assert files[1]["sha256"] == "" and files[1]["url"] == "https://files.example/x/uv-0.13.8.tar.gz"
    assert pi.project_url("", "Open_Clip.Torch") == "https://pypi.org/simple/open-clip-torch/"


# --- uv on the host ------------------------------------------------------------------------------------


def test_resolving_a_lock_never_lets_uv_download_a_python(tmp_path, monkeypatch):
    # Without an interpreter of the target version uv would fetch a CPython into root's home (offline: retry for
    # seconds) and then resolve with the controller's anyway.
    seen = {}

    def run(argv, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(argv, 1, "", "stopped by the test")

    monkeypatch.setattr(bb.subprocess, "run", run)
    inputs = {"platform": "Linux-x86_64", "python": "3.10", "torch": {"index_url": ""}}
    with pytest.raises(bb.BundleError, match="stopped by the test"):
        bb.resolve("uv", "0.0.0", inputs, "", str(tmp_path / "lock.txt"), "")
    assert seen["UV_PYTHON_DOWNLOADS"] == "never"
    assert seen["UV_NO_CONFIG"] == "1"


def test_uv_is_installed_from_its_pinned_wheel_and_then_left_alone(tmp_path):
    wheel = tmp_path / "src" / "uv-9.9.9-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as out:
        out.writestr("uv-9.9.9.data/scripts/uv", "#!/bin/sh\necho uv 9.9.9\n")
    pin = {"file": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
    tools = tmp_path / "tools"
    assert not uv_install.is_current(str(tools), "9.9.9", pin["sha256"])
    path = uv_install.install(str(tools), "9.9.9", pin, local_dir=str(wheel.parent))
    assert subprocess.run([path], capture_output=True, text=True, check=True).stdout == "uv 9.9.9\n"
    assert uv_install.is_current(str(tools), "9.9.9", pin["sha256"])
    Path(path).write_text("#!/bin/sh\necho changed\n")
    assert not uv_install.is_current(str(tools), "9.9.9", pin["sha256"]), (
        "a changed binary is installed again"
    )
    with pytest.raises(uv_install.UvInstallError, match=r"has sha256 .* the lock pins 0+"):
        uv_install.install(str(tools), "9.9.9", {**pin, "sha256": "0" * 64}, local_dir=str(wheel.parent))


# --- bundle bookkeeping and preflight ------------------------------------------------------------------


def small_bundle(path, platform="Linux-x86_64"):
    (path / "wheelhouse").mkdir(parents=True)
    (path / "wheelhouse" / "a-1-py3-none-any.whl").write_bytes(b"wheel")
    bl.write_json(str(path / bl.MANIFEST), {"format": 1, "platform": platform, "locks": {"3.11": "locks/x"},
                                            "models": [{"name": "m1"}], "built": []})  # fmt: skip
    bl.write_sums(str(path))
    return path


def test_sums_catch_a_changed_missing_or_extra_file(tmp_path):
    bundle = small_bundle(tmp_path / "b")
    assert bl.verify_sums(str(bundle)) == 2
    (bundle / "wheelhouse" / "extra.whl").write_bytes(b"x")
    with pytest.raises(bl.BundleError, match=r"extra\.whl is not listed"):
        bl.verify_sums(str(bundle))
    (bundle / "wheelhouse" / "extra.whl").unlink()
    (bundle / "wheelhouse" / "a-1-py3-none-any.whl").write_bytes(b"wheeL")
    with pytest.raises(bl.BundleError, match="does not match its sha256"):
        bl.verify_sums(str(bundle))
    (bundle / "wheelhouse" / "a-1-py3-none-any.whl").unlink()
    with pytest.raises(bl.BundleError, match="listed in SHA256SUMS but missing"):
        bl.verify_sums(str(bundle))
    (bundle / bl.SUMS).unlink()
    with pytest.raises(bl.BundleError, match="not a finished bundle"):
        bl.verify_sums(str(bundle))


@pytest.fixture
def open_dir():
    """A directory other users can enter (pytest's own tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="sdt-bundle-unit-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - the point of the test
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_preflight_names_each_thing_the_bundle_cannot_serve(open_dir):
    bundle = small_bundle(open_dir / "open" / "b")
    os.chmod(open_dir / "open", 0o755)  # noqa: S103
    assert bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [{"name": "m1"}], [], "Linux") == []
    problems = bl.preflight_problems(
        str(bundle),
        "Darwin-arm64",
        ["3.10"],
        [{"name": "m1"}, {"name": "m2"}],
        ["Homebrew (/opt/homebrew)"],
        "Darwin",
    )
    text = " ".join(problems)
    assert (
        "is for Linux-x86_64, this host is Darwin-arm64: make a bundle with make bundle PLATFORM=Darwin-arm64"
        in text
    )
    assert "carries the venv for Python 3.11, this host would use 3.10" in text
    assert "does not carry the enabled model(s) m2" in text
    assert "lacks Homebrew (/opt/homebrew), which no bundle carries" in text and "Homebrew's bottles" in text
    stale = bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux", {"x": "0" * 64})
    assert stale and "made from other venv locks than this checkout's (x)" in stale[0]
    os.chmod(open_dir / "open", 0o700)
    closed = bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux")
    assert any(f"({open_dir}/open is closed to them)" in p for p in closed), closed
    assert (
        "has no readable manifest.json"
        in bl.preflight_problems(str(open_dir), "Linux-x86_64", [], [], [], "Linux")[0]
    )


def test_a_bundle_made_without_comfyui_is_refused_when_comfyui_is_chosen(open_dir):
    bundle = small_bundle(open_dir / "open" / "b")
    os.chmod(open_dir / "open", 0o755)  # noqa: S103
    pin = lock()["comfyui"]["commit"]
    refused = bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux", {}, pin)
    assert refused == [
        f"The bundle {bundle} does not carry ComfyUI (it was made without comfyui in sdenv_apps): make the bundle "
        "again with comfyui in sdenv_apps, or take comfyui out of sdenv_apps."
    ]
    manifest = json.loads((bundle / bl.MANIFEST).read_text())
    bl.write_json(
        str(bundle / bl.MANIFEST), {**manifest, "apps": ["webui", "comfyui"], "comfyui": {"commit": "f" * 40}}
    )
    other = bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux", {}, pin)
    assert other == [
        f"The bundle {bundle} carries ComfyUI at ffffffffff, lock.yml pins {pin[:10]}: make the bundle again from "
        "this checkout."
    ]
    bl.write_json(
        str(bundle / bl.MANIFEST), {**manifest, "apps": ["webui", "comfyui"], "comfyui": {"commit": pin}}
    )
    assert bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux", {}, pin) == []
    # The WebUI alone never asks for ComfyUI; a stale ComfyUI lock is named by its place in locks/.
    assert bl.preflight_problems(str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux") == []
    stale = bl.preflight_problems(
        str(bundle), "Linux-x86_64", ["3.11"], [], [], "Linux", {"comfyui/x.txt": "0" * 64}, pin
    )
    assert stale and "than this checkout's (comfyui/x.txt)" in stale[0]


def test_a_bundle_carries_comfyui_only_when_sdenv_apps_names_it():
    pins = lock()
    assert bb.bundle_apps({"lock": pins, "apps": ["webui"]}) == ["webui"]
    assert bb.bundle_apps({"lock": pins}) == ["webui"]
    # The Mac apps are casks, never in a bundle; ComfyUI is.
    assert bb.bundle_apps({"lock": pins, "apps": ["comfyui", "diffusionbee", "webui"]}) == [
        "webui",
        "comfyui",
    ]
    assert [p["dir"] for p in bb.git_pins(pins)] == ["stable-diffusion-webui"] + [
        r["dir"] for r in pins["repositories"]
    ]
    comfy = bb.git_pins(pins, ["webui", "comfyui"])[-1]
    assert comfy == {"dir": "ComfyUI", "repo": pins["comfyui"]["repo"], "commit": pins["comfyui"]["commit"]}
    without = {k: v for k, v in pins.items() if k != "comfyui"}
    with pytest.raises(bl.BundleError, match=r"lock\.yml pins no ComfyUI \(sdenv_lock\.comfyui\)"):
        bb.bundle_apps({"lock": without, "apps": ["webui", "comfyui"]})


def test_bundle_check_names_a_comfyui_lock_or_wheel_the_bundle_lacks(tmp_path):
    text = "pyyaml==6.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    locks = {"3.11": ("Linux-x86_64-py3.11.txt", text, vl.parse_packages(text))}
    (tmp_path / "locks" / "comfyui").mkdir(parents=True)
    with pytest.raises(bl.BundleError, match=r"bundle's comfyui/Linux-x86_64-py3\.11\.txt differs"):
        bb.check_wheels(str(tmp_path), locks, {}, "comfyui/")
    (tmp_path / "locks" / "comfyui" / "Linux-x86_64-py3.11.txt").write_text(text)
    with pytest.raises(bl.BundleError, match=r"no locked file of pyyaml==6\.0 for Python 3\.11"):
        bb.check_wheels(str(tmp_path), locks, {}, "comfyui/")
    row = {"package": "pyyaml", "sha256": "a" * 64, "pythons": ["3.11"]}
    bb.check_wheels(str(tmp_path), locks, {"PyYAML-6.0-py3-none-any.whl": row}, "comfyui/")


def test_manifests_of_another_format_are_refused(tmp_path):
    (tmp_path / bl.MANIFEST).write_text(json.dumps({"format": 2, "platform": "Linux-x86_64"}))
    with pytest.raises(bl.BundleError, match="format 1"):
        bl.read_manifest(str(tmp_path))


# --- ComfyUI's venv locks (role comfyui) ----------------------------------------------------------------
# requirements.txt of ComfyUI at the pinned v0.3.64 (read from upstream's tree at that commit).
COMFYUI_REQUIREMENTS_SHA256 = "35d6c9a7055c770f73902b6556af4e34c949c66831680026b6ec65804dc5a02d"


@pytest.mark.parametrize("platform", sorted(vl.PYTHONS))
def test_every_committed_comfyui_lock_was_resolved_from_todays_lock_yml(platform):
    pins = lock()["comfyui_venv"]["torch"][platform]
    for python in vl.PYTHONS[platform]:
        name = vl.lock_file_name(platform, python)
        text = (LOCK_DIR / "comfyui" / name).read_text()
        recorded = vl.check_lock_text(
            text,
            lock(),
            platform,
            python,
            name,
            COMFYUI_REQUIREMENTS_SHA256,
            inputs_of=vl.comfyui_lock_inputs,
        )
        assert recorded["app"] == "comfyui" and recorded["comfyui_commit"] == lock()["comfyui"]["commit"]
        packages = vl.parse_packages(text)
        for name_ in ("torch", "torchvision", "torchaudio"):
            assert packages[name_]["version"] == pins[name_]
        assert packages["pip"]["version"] == lock()["webui_venv"]["pip"]
        # Upstream's own == pins and the unpinned sampler dependency are all in the locked set.
        assert packages["comfyui-frontend-package"]["version"] == "1.27.10" and "torchsde" in packages
        assert all(p["hashes"] and all(len(h) == 64 for h in p["hashes"]) for p in packages.values())


# Modules upstream's own code at the pin imports at start (main.py -> server.py -> ...) that its requirements.txt
# does not name: the real v0.3.64 exits with ModuleNotFoundError when the venv lacks them (the real lane).
COMFYUI_UNLISTED_IMPORTS = {"requests": "app/frontend_management.py, imported by server.py"}


@pytest.mark.parametrize("platform", sorted(vl.PYTHONS))
def test_every_comfyui_lock_holds_what_upstream_imports_without_naming_it(platform):
    for python in vl.PYTHONS[platform]:
        packages = vl.parse_packages((LOCK_DIR / "comfyui" / vl.lock_file_name(platform, python)).read_text())
        for module, where in COMFYUI_UNLISTED_IMPORTS.items():
            assert module in packages, f"{platform} py{python}: no {module} ({where})"


def test_lock_yml_requires_are_in_the_comfyui_input_and_its_digest():
    inputs = vl.comfyui_lock_inputs(lock(), "Linux-x86_64", "3.11", "r" * 64)
    assert set(COMFYUI_UNLISTED_IMPORTS) <= set(inputs["requires"])
    assert "requests" in vl.comfyui_requirements_in(inputs, "torch\n").splitlines()
    fewer = lock()
    fewer["comfyui_venv"]["requires"] = []
    assert vl.inputs_digest(
        vl.comfyui_lock_inputs(fewer, "Linux-x86_64", "3.11", "r" * 64)
    ) != vl.inputs_digest(inputs)


def test_a_changed_comfyui_pin_makes_its_lock_stale_and_the_webuis_inputs_never_match_it():
    name = vl.lock_file_name("Linux-x86_64", "3.11")
    text = (LOCK_DIR / "comfyui" / name).read_text()
    changed = lock()
    changed["comfyui_venv"]["torch"]["Linux-x86_64"]["torch"] = "2.9.0"
    with pytest.raises(vl.LockError, match=r"resolved from other inputs .*torch.* run make lock-venv"):
        vl.check_lock_text(text, changed, "Linux-x86_64", "3.11", name, inputs_of=vl.comfyui_lock_inputs)
    with pytest.raises(vl.LockError, match=r"run make lock-venv"):
        vl.check_lock_text(text, lock(), "Linux-x86_64", "3.11", name)  # read as the WebUI's: refused
    source = vl.comfyui_requirements_in(
        vl.comfyui_lock_inputs(lock(), "Darwin-arm64", "3.10", "r" * 64), "torch\n# c\npyyaml\n"
    )
    assert {"torch", "pyyaml", "torch==2.8.0", "torchaudio==2.8.0"} <= set(source.splitlines())
    assert "# c" not in source.splitlines()


def test_a_webui_upgrade_keeps_comfyuis_locks_whose_inputs_have_not_moved(tmp_path, monkeypatch):
    """make upgrade WEBUI= re-locks the WebUI's venv; ComfyUI's pin has not moved, so its locks are copied from
    the current venv-lock (no clone of ComfyUI, no uv run for it), and a stale one is still resolved."""
    resolved, fetched = [], []
    monkeypatch.setattr(bb, "uv_command", lambda: "uv")
    monkeypatch.setattr(bb, "uv_version", lambda uv: "0.0")
    monkeypatch.setattr(bb, "webui_requirements", lambda lock_, cache: b"torch\n")
    monkeypatch.setattr(bb, "archive_cache", lambda cache, spec: spec["file"])
    monkeypatch.setattr(bb, "archive_member", lambda path, member: "")
    monkeypatch.setattr(bb, "comfyui_requirements", lambda lock_, cache: fetched.append(1) or b"torch\n")
    monkeypatch.setattr(bb, "resolve", lambda uv, version, inputs, source, path, index: resolved.append(path))
    current = LOCK_DIR  # the committed locks, resolved from today's lock.yml (the test above checks that)
    out = tmp_path / "new"
    bb.lock_venv(lock(), str(out), str(tmp_path), platforms=["Linux-x86_64"], reuse_dir=str(current))
    names = [vl.lock_file_name("Linux-x86_64", python) for python in vl.PYTHONS["Linux-x86_64"]]
    assert sorted(Path(p).name for p in resolved) == sorted(names)  # the WebUI's only
    assert fetched == []
    for name in names:
        assert (out / "comfyui" / name).read_bytes() == (current / "comfyui" / name).read_bytes()

    moved = lock()
    moved["comfyui"] = {**moved["comfyui"], "commit": "f" * 40}
    resolved.clear()
    bb.lock_venv(
        moved, str(tmp_path / "again"), str(tmp_path), platforms=["Linux-x86_64"], reuse_dir=str(current)
    )
    assert fetched == [1] and sum("/comfyui/" in p for p in resolved) == len(names)


def test_a_comfyui_upgrade_relocks_comfyui_alone(tmp_path, monkeypatch):
    """make upgrade COMFYUI= re-locks ComfyUI's venv only: the WebUI's requirements are never read and none of
    its locks is resolved (their unpinned packages would float); ComfyUI's requirements.txt is read once."""
    resolved, fetched = [], []
    monkeypatch.setattr(bb, "uv_command", lambda: "uv")
    monkeypatch.setattr(bb, "uv_version", lambda uv: "0.0")
    monkeypatch.setattr(bb, "webui_requirements", lambda lock_, cache: pytest.fail("the WebUI was re-locked"))
    monkeypatch.setattr(bb, "comfyui_requirements", lambda lock_, cache: fetched.append(1) or b"torch\n")
    monkeypatch.setattr(bb, "resolve", lambda uv, version, inputs, source, path, index: resolved.append(path))
    bb.lock_comfyui_venv(lock(), str(tmp_path), str(tmp_path), platforms=["Linux-x86_64", "Darwin-arm64"])
    names = ["Darwin-arm64-py3.10.txt", "Linux-x86_64-py3.10.txt", "Linux-x86_64-py3.11.txt"]
    assert sorted(str(Path(p).relative_to(tmp_path)) for p in resolved) == [f"comfyui/{n}" for n in names]
    assert fetched == [1]
    # The upgrade's plan read requirements.txt already: ComfyUI is not fetched again for the locks.
    fetched.clear()
    bb.lock_comfyui_venv(
        lock(), str(tmp_path), str(tmp_path), platforms=["Linux-x86_64"], requirements=b"torch\n"
    )
    assert fetched == []
