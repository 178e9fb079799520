"""make upgrade's plan (webui_upgrade) and its lock editor (lock_text_edit): the pins read from a WebUI commit's
own files, the changes old -> new (a vanished repository replaced by the lock's), the edit that touches only
the changed values, and what an interrupted upgrade's journal leads to."""

import difflib

import lock_text_edit as le
import pytest
import webui_upgrade as wu
import yaml

# Shaped like upstream's modules/launch_utils.py at the dev branch (2026): the assignments at the top of
# prepare_environment() are the pins; the IPEX branch nested below is not this toolkit's platform.
LAUNCH_UTILS = """
import os

def commit_hash():
    return "x"

def prepare_environment():
    torch_index_url = os.environ.get('TORCH_INDEX_URL', "https://download.pytorch.org/whl/cu128")
    torch_command = os.environ.get('TORCH_COMMAND', f"pip install torch==2.7.0 torchvision==0.22.0 --extra-index-url {torch_index_url}")
    if args.use_ipex:
        torch_index_url = os.environ.get('TORCH_INDEX_URL', "https://pytorch-extension.intel.com/release-whl/")
        torch_command = os.environ.get('TORCH_COMMAND', f"pip install torch==2.0.0a0 --extra-index-url {torch_index_url}")
    requirements_file = os.environ.get('REQS_FILE', "requirements_versions.txt")
    clip_package = os.environ.get('CLIP_PACKAGE', "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip")
    openclip_package = os.environ.get('OPENCLIP_PACKAGE', "https://github.com/mlfoundations/open_clip/archive/bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip")
    assets_repo = os.environ.get('ASSETS_REPO', "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git")
    stable_diffusion_repo = os.environ.get('STABLE_DIFFUSION_REPO', "https://github.com/w-e-w/stablediffusion.git")
    stable_diffusion_xl_repo = os.environ.get('STABLE_DIFFUSION_XL_REPO', "https://github.com/Stability-AI/generative-models.git")
    k_diffusion_repo = os.environ.get('K_DIFFUSION_REPO', 'https://github.com/crowsonkb/k-diffusion.git')
    blip_repo = os.environ.get('BLIP_REPO', 'https://github.com/salesforce/BLIP.git')
    assets_commit_hash = os.environ.get('ASSETS_COMMIT_HASH', "6f7db241d2f8ba7457bac5ca9753331f0c266917")
    stable_diffusion_commit_hash = os.environ.get('STABLE_DIFFUSION_COMMIT_HASH', "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf")
    stable_diffusion_xl_commit_hash = os.environ.get('STABLE_DIFFUSION_XL_COMMIT_HASH', "45c443b316737a4ab6e40413d7794a7f5657c19f")
    k_diffusion_commit_hash = os.environ.get('K_DIFFUSION_COMMIT_HASH', "ab527a9a6d347f364e3d185ba6d714e22d80cb3c")
    blip_commit_hash = os.environ.get('BLIP_COMMIT_HASH', "48211a1594f1321b00f14c9f7a5b4813144b2fb9")
    commit = commit_hash()
"""

# webui-macos-env.sh as upstream ships it (v1.10.1 and dev are the same here).
MACOS_ENV = """#!/bin/bash
export install_dir="$HOME"
export COMMANDLINE_ARGS="--skip-torch-cuda-test --upcast-sampling --no-half-vae --use-cpu interrogate"
if [[ "$(sysctl -n machdep.cpu.brand_string)" =~ ^.*"Intel".*$ ]]; then
    export TORCH_COMMAND="pip install torch==2.1.2 torchvision==0.16.2"
else
    export TORCH_COMMAND="pip install torch==2.3.1 torchvision==0.18.1"
fi
"""

REQUIREMENTS = "setuptools==69.5.1  # the launcher's\r\nGitPython==3.1.32\r\nsafetensors==0.4.5\r\ntorch\r\n"

LOCK = """---
# The pins.
sdenv_lock:
  webui:
    # the WebUI's tag
    repo: https://github.com/AUTOMATIC1111/stable-diffusion-webui.git
    commit: 82a973c04367123ae98bd9abdf80d9eda9b910e2
    version: v1.10.1
  repositories:
    - dir: stable-diffusion-webui-assets
      env: ASSETS
      repo: https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git
      commit: 6f7db241d2f8ba7457bac5ca9753331f0c266917
    - dir: stable-diffusion-stability-ai
      env: STABLE_DIFFUSION
      # the Stability-AI repository was deleted: this fork carries the commit
      repo: https://github.com/w-e-w/stablediffusion.git
      commit: cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
    - dir: generative-models
      env: STABLE_DIFFUSION_XL
      repo: https://github.com/Stability-AI/generative-models.git
      commit: 45c443b316737a4ab6e40413d7794a7f5657c19f
    - dir: k-diffusion
      env: K_DIFFUSION
      repo: https://github.com/crowsonkb/k-diffusion.git
      commit: ab527a9a6d347f364e3d185ba6d714e22d80cb3c
    - dir: BLIP
      env: BLIP
      repo: https://github.com/salesforce/BLIP.git
      commit: 48211a1594f1321b00f14c9f7a5b4813144b2fb9
  webui_venv:
    wheel: "0.45.1"
    setuptools: "69.5.1"  # CLIP needs pkg_resources
    torch:
      Darwin-arm64: {torch: "2.3.1", torchvision: "0.18.1", index_url: ""}
      Darwin-x86_64: {torch: "2.1.2", torchvision: "0.16.2", index_url: ""}
      Linux-x86_64: {torch: "2.1.2", torchvision: "0.16.2", index_url: ""}
      Linux-aarch64: {torch: "2.1.2", torchvision: "0.16.2", index_url: ""}
    clip:
      url: https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip
      file: CLIP-d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip
      tree: 890f55331a8edb58298ea6de576152d34d806b69
      sha256: ""
    open_clip:
      url: https://github.com/mlfoundations/open_clip/archive/bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip
      file: open_clip-bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip
      tree: 35436893c74e25a55bf4791822005d314a04ca5b
      sha256: ""
  models: []
"""
NEW = "1937682a20f7f0442311a1ede68f9f0cb480163b"
STABILITY = "https://github.com/Stability-AI/stablediffusion.git"
FORK = "https://github.com/w-e-w/stablediffusion.git"


def test_launcher_pins_are_the_top_level_defaults():
    pins = wu.launcher_pins(LAUNCH_UTILS)
    assert pins["torch_command"] == (
        "pip install torch==2.7.0 torchvision==0.22.0 --extra-index-url https://download.pytorch.org/whl/cu128"
    )  # the f-string over the earlier default, not the nested IPEX branch
    assert pins["stable_diffusion_repo"] == FORK
    assert pins["blip_commit_hash"] == "48211a1594f1321b00f14c9f7a5b4813144b2fb9"
    assert "commit" not in pins  # a call is not a pin


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def prepare_environment(:\n", "does not parse"),
        ("def other():\n    pass\n", "no prepare_environment"),
    ],
)
def test_launcher_refusals(source, message):
    with pytest.raises(wu.UpgradeError, match=message):
        wu.launcher_pins(source)


def test_macos_torch_per_cpu_kind():
    commands = wu.macos_torch_commands(MACOS_ENV)
    assert wu.torch_pins(commands["Darwin-x86_64"]) == {
        "torch": "2.1.2",
        "torchvision": "0.16.2",
        "index_url": "",
    }
    assert wu.torch_pins(commands["Darwin-arm64"])["torch"] == "2.3.1"
    both = wu.macos_torch_commands('export TORCH_COMMAND="pip install torch==2.5.0 torchvision==0.20.0"\n')
    assert set(both) == {"Darwin-x86_64", "Darwin-arm64"}


def test_requirement_pin_reads_crlf_and_normalized_names():
    assert wu.requirement_pin(REQUIREMENTS, "setuptools") == "69.5.1"
    assert wu.requirement_pin(REQUIREMENTS, "gitpython") == "3.1.32"
    assert wu.requirement_pin(REQUIREMENTS, "torch") is None


def wanted(launch=LAUNCH_UTILS, requirements=REQUIREMENTS):
    return wu.wanted_values(
        wu.launcher_pins(launch),
        wu.macos_torch_commands(MACOS_ENV),
        requirements,
        "v1.10.1-96-g1937682a",
        NEW,
    )


def plan(launch=LAUNCH_UTILS, requirements=REQUIREMENTS, served=None, strict=True):
    doc = yaml.safe_load(LOCK)
    values, _, _ = wanted(launch, requirements)
    served = served or {}
    return wu.plan_changes(
        doc["sdenv_lock"], values, lambda path: le.get_value(doc, path),
        lambda repo, commit: served.get(repo, True), lambda url: "e" * 40, strict=strict,
    )  # fmt: skip


def test_plan_of_the_dev_branch():
    changes, notes = plan()
    assert {c.name: (c.old, c.new) for c in changes} == {
        "webui.commit": ("82a973c04367123ae98bd9abdf80d9eda9b910e2", NEW),
        "webui.version": ("v1.10.1", "v1.10.1-96-g1937682a"),
        "webui_venv.torch.Linux-x86_64.torch": ("2.1.2", "2.7.0"),
        "webui_venv.torch.Linux-x86_64.torchvision": ("0.16.2", "0.22.0"),
        "webui_venv.torch.Linux-aarch64.torch": ("2.1.2", "2.7.0"),
        "webui_venv.torch.Linux-aarch64.torchvision": ("0.16.2", "0.22.0"),
    }
    assert notes == []
    assert wanted()[2] == "https://download.pytorch.org/whl/cu128"


def test_a_vanished_repository_is_named_with_the_locks_replacement():
    old_launcher = LAUNCH_UTILS.replace(FORK, STABILITY)  # v1.10.1 still names the deleted repository
    changes, notes = plan(old_launcher, served={STABILITY: False})
    assert not [c for c in changes if c.path[0] == "repositories"]
    assert notes == [
        f"repositories/stable-diffusion-stability-ai: {STABILITY} does not serve it; kept the lock's replacement"
        f" {FORK}, which serves cf1d67a6fd"
    ]


def test_a_changed_subrepository_pin_and_repo():
    launch = LAUNCH_UTILS.replace("ab527a9a6d347f364e3d185ba6d714e22d80cb3c", "1" * 40).replace(
        "https://github.com/crowsonkb/k-diffusion.git", "https://example.org/k-diffusion.git"
    )
    changes, _ = plan(launch)
    named = {c.name: (c.old, c.new) for c in changes}
    assert named["repositories.k-diffusion.commit"] == ("ab527a9a6d347f364e3d185ba6d714e22d80cb3c", "1" * 40)
    assert named["repositories.k-diffusion.repo"][1] == "https://example.org/k-diffusion.git"


def test_no_repository_serves_the_commit():
    with pytest.raises(wu.UpgradeError, match=r"Neither .* nor the lock's .* serves"):
        plan(LAUNCH_UTILS.replace(FORK, STABILITY), served={STABILITY: False, FORK: False})
    with pytest.raises(wu.UpgradeError, match="could not be reached to check"):
        plan(served={FORK: None})


def test_check_mode_notes_an_unreachable_repository():
    changes, notes = plan(served={FORK: None}, strict=False)
    assert notes == [
        f"repositories/stable-diffusion-stability-ai: {FORK} could not be reached from here: cf1d67a6fd was not checked"
    ]
    assert not [c for c in changes if c.path[0] == "repositories"]


def test_a_changed_archive_brings_its_file_and_tree():
    launch = LAUNCH_UTILS.replace("d50d76daa670286dd6cacf3bcd80b5e4823fc8e1", "2" * 40)
    named = {c.name: c.new for c in plan(launch)[0]}
    assert named["webui_venv.clip.file"] == "CLIP-" + "2" * 40 + ".zip"
    assert named["webui_venv.clip.tree"] == "e" * 40
    assert named["webui_venv.clip.sha256"] == ""


def test_unpinned_archive_and_bad_commit_are_refused():
    with pytest.raises(wu.UpgradeError, match="not a GitHub archive pinned by commit"):
        wanted(
            LAUNCH_UTILS.replace(
                "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip", "clip"
            )
        )
    with pytest.raises(wu.UpgradeError, match="not a 40-hex commit id"):
        wanted(LAUNCH_UTILS.replace("48211a1594f1321b00f14c9f7a5b4813144b2fb9", "main"))


def test_a_pin_the_commit_does_not_name_is_kept_and_said():
    values, unread, _ = wanted(requirements="torch\n")
    assert "requirements_versions.txt" in unread
    assert ("webui_venv", "setuptools") not in [path for path, _, _ in values]


def test_applying_the_plan_changes_only_those_lines():
    changes, _ = plan(
        LAUNCH_UTILS.replace("45c443b316737a4ab6e40413d7794a7f5657c19f", "0123456789abcdef" * 2 + "0" * 8)
    )
    after = le.set_values(LOCK, [(c.path, c.new) for c in changes], yaml.safe_load)
    diff = [line for line in difflib.unified_diff(LOCK.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]  # fmt: skip
    assert diff == [
        "-    commit: 82a973c04367123ae98bd9abdf80d9eda9b910e2",
        "-    version: v1.10.1",
        f"+    commit: {NEW}",
        "+    version: v1.10.1-96-g1937682a",
        "-      commit: 45c443b316737a4ab6e40413d7794a7f5657c19f",
        "+      commit: 0123456789abcdef0123456789abcdef00000000",
        '-      Linux-x86_64: {torch: "2.1.2", torchvision: "0.16.2", index_url: ""}',
        '-      Linux-aarch64: {torch: "2.1.2", torchvision: "0.16.2", index_url: ""}',
        '+      Linux-x86_64: {torch: "2.7.0", torchvision: "0.22.0", index_url: ""}',
        '+      Linux-aarch64: {torch: "2.7.0", torchvision: "0.22.0", index_url: ""}',
    ]
    assert "# the Stability-AI repository was deleted: this fork carries the commit" in after
    doc = yaml.safe_load(after)["sdenv_lock"]
    assert doc["repositories"][2]["commit"] == "0123456789abcdef" * 2 + "0" * 8
    # A downgrade is the same edit back: the result is the original text, byte for byte.
    back = le.set_values(after, [(c.path, c.old) for c in changes], yaml.safe_load)
    assert back == LOCK


def test_a_sequence_at_its_keys_indent_is_edited_in_place():
    """PyYAML writes a list under a key with the dashes at the key's own indent; the edit finds its items."""
    text = yaml.safe_dump({"sdenv_lock": yaml.safe_load(LOCK)["sdenv_lock"]}, sort_keys=False)
    assert "\n  - dir: BLIP\n" in text
    after = le.set_values(text, [(("repositories", "dir=BLIP", "commit"), "a" * 40)], yaml.safe_load)
    diff = [line for line in difflib.unified_diff(text.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]  # fmt: skip
    old = yaml.safe_load(LOCK)["sdenv_lock"]["repositories"][-1]["commit"]
    assert diff == [f"-    commit: {old}", f"+    commit: {'a' * 40}"]
    # The key after the list still ends it: the next mapping key is not read as part of repositories.
    with pytest.raises(le.LockTextError, match="no item with dir: webui_venv"):
        le.set_value(text, ("repositories", "dir=webui_venv", "commit"), "x")


def test_a_value_that_reads_as_a_number_is_quoted():
    after = le.set_values(LOCK, [(("repositories", "dir=BLIP", "commit"), "0123456789" * 4)], yaml.safe_load)
    assert '      commit: "0123456789012345678901234567890123456789"\n' in after


def test_editing_keeps_a_trailing_comment_and_quotes():
    after = le.set_value(LOCK, ("webui_venv", "setuptools"), "70.1.0")
    assert '    setuptools: "70.1.0"  # CLIP needs pkg_resources\n' in after


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("webui", "nope"), "no key nope under sdenv_lock.webui"),
        (("repositories", "dir=nope", "commit"), "no item with dir: nope"),
        (("webui_venv", "clip"), "does not hold a single value"),
        (("repositories", "dir=BLIP"), "is a list item"),
    ],
)
def test_edit_refusals(path, message):
    with pytest.raises(le.LockTextError, match=message):
        le.set_value(LOCK, path, "x")


def test_an_edit_read_back_wrong_is_refused():
    with pytest.raises(le.LockTextError, match="reads"):
        le.set_values(LOCK, [(("webui", "commit"), "abc")], lambda text: yaml.safe_load(LOCK))


def test_plan_text_is_a_diff_of_pins():
    changes, notes = plan()
    text = wu.plan_text(changes, notes, ["x"], "v1.10.1", "v1.10.1-96-g1937682a", ["venv lock a: b 1 -> 2"])
    lines = text.splitlines()
    assert lines[0] == "Upgrade plan: WebUI v1.10.1 -> v1.10.1-96-g1937682a"
    assert any(
        line.split() == ["webui_venv.torch.Linux-x86_64.torch", "2.1.2", "->", "2.7.0"] for line in lines
    )
    assert lines[-2:] == [
        "  note: the new commit does not name x; the lock keeps its value",
        "  note: venv lock a: b 1 -> 2",
    ]
    assert "(no pin changes" in wu.plan_text([], [], [], "a", "a")


def test_snapshot_label_names_both_versions_within_the_store_rule():
    label = wu.snapshot_label("v1.10.1", "v1.10.1-96-g1937682a")
    assert label == "upgrade-v1.10.1-to-v1.10.1-96-g1937682a"
    long = wu.snapshot_label("x" * 80, "a/b..c d")
    assert len(long) <= 64 and ".." not in long and "/" not in long and " " not in long


@pytest.mark.parametrize(
    ("journal", "expected"),
    [
        (None, ("none", [])),
        ({"step": "planned", "hosts": {"a": "waiting"}}, ("discard", [])),
        ({"step": "locked", "hosts": {"a": "waiting"}}, ("restore", [])),
        ({"step": "locked", "hosts": {"a": "snapshot"}}, ("restore", [])),
        (
            {"step": "locked", "hosts": {"b": "provision", "a": "done", "c": "waiting"}},
            ("restore", ["a", "b"]),
        ),
        ({"step": "restoring", "hosts": {"a": "verify"}}, ("restore", ["a"])),
    ],
)
def test_recovery_from_a_journal(journal, expected):
    assert wu.recovery(journal) == expected


@pytest.mark.parametrize(
    ("url", "file"),
    [
        ("https://github.com/openai/CLIP/archive/" + "a" * 40 + ".zip", "CLIP-" + "a" * 40 + ".zip"),
        ("http://127.0.0.1:8080/archives/CLIP-" + "c" * 40 + ".zip", "CLIP-" + "c" * 40 + ".zip"),
    ],
)
def test_archive_file_names(url, file):
    assert wu.archive_file(url) == file


def test_the_relock_covers_the_platforms_the_venv_lock_holds():
    names = ["Linux-x86_64-py3.10.txt", "Linux-x86_64-py3.11.txt", "Darwin-arm64-py3.10.txt", "README.md"]
    assert wu.locked_platforms(names) == ["Darwin-arm64", "Linux-x86_64"]
    assert wu.locked_platforms([]) == []  # none locked yet: lock_venv takes that as every platform


def load_upgrade_cli():
    """roles/webui/files/sdenv_upgrade.py (a script, not a package) as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "roles" / "webui" / "files" / "sdenv_upgrade.py"
    spec = importlib.util.spec_from_file_location("sdenv_upgrade_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("journal", "recovered", "status", "calls"),
    [
        (None, 0, 0, 0),  # no interrupted upgrade: make rollback goes on as usual
        ({"step": "locked", "hosts": {"h": "provision"}}, 0, 3, 1),  # undone, then make rollback stops
        ({"step": "locked", "hosts": {"h": "provision"}}, 1, 1, 1),  # the undo was red: an error
    ],
)
def test_make_rollback_first_undoes_an_interrupted_upgrade_then_stops(
    monkeypatch, tmp_path, journal, recovered, status, calls
):
    import types

    cli = load_upgrade_cli()
    seen = []
    monkeypatch.setattr(cli, "read_journal", lambda place: journal)
    monkeypatch.setattr(cli, "recover", lambda args, place: seen.append(place) or recovered)
    place = types.SimpleNamespace(inventory=tmp_path / "hosts.yml")  # the upgrade lock sits beside it
    # Stopping matters: after the undo, make rollback's TO=latest would be the snapshot taken before that undo.
    assert cli.recover_before_rollback(None, place) == status
    assert len(seen) == calls


# --- What the launcher installs before the pinned packages (build_steps, build_notes) -------------------------
# RECORDED, not written here: the lines of modules/launch_utils.py's prepare_environment() that build_steps
# reads, as github:kklouzal/stable-diffusion-webui carries them (the rest of the function left out). Tag v1.10.1
# (82a973c0): lines 318, 344-346, 393-395. Branch dev at 1937682a20f7 (2026-03-02): lines 350, 376-378, 425-446.
V1_10_1_PREPARE = """
def prepare_environment():
    xformers_package = os.environ.get('XFORMERS_PACKAGE', 'xformers==0.0.23.post1')
    clip_package = os.environ.get('CLIP_PACKAGE', "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip")
    openclip_package = os.environ.get('OPENCLIP_PACKAGE', "https://github.com/mlfoundations/open_clip/archive/bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip")
    if not is_installed("clip"):
        run_pip(f"install {clip_package}", "clip")
        startup_timer.record("install clip")
"""
DEV_PREPARE = '''
def prepare_environment():
    xformers_package = os.environ.get('XFORMERS_PACKAGE', 'xformers==0.0.30')
    clip_package = os.environ.get('CLIP_PACKAGE', "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip")
    openclip_package = os.environ.get('OPENCLIP_PACKAGE', "https://github.com/mlfoundations/open_clip/archive/bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip")
    # Ensure build dependencies are installed before any package that might need them
    def ensure_build_dependencies():
        """Ensure essential build tools are available"""
        if not is_installed("wheel"):
            run_pip("install wheel", "wheel")
        # Check setuptools version compatibility
        try:
            setuptools_version = run(f'"{python}" -c "import setuptools; print(setuptools.__version__)"', None, None).strip()
            if setuptools_version >= "70":
                run_pip("install setuptools==69.5.1", "setuptools")
        except Exception:
            # If setuptools check fails, install compatible version
            run_pip("install setuptools==69.5.1", "setuptools")
    # Install build dependencies early
    ensure_build_dependencies()

    if not is_installed("clip"):
        run_pip(f"install --no-build-isolation {clip_package}", "clip")
        startup_timer.record("install clip")

    if not is_installed("open_clip"):
        run_pip(f"install {openclip_package}", "open_clip")
        startup_timer.record("install open_clip")
'''
LOCK_VENV = yaml.safe_load(LOCK)["sdenv_lock"]["webui_venv"]


def test_build_steps_of_the_real_v1_10_1_and_dev():
    assert wu.build_steps(V1_10_1_PREPARE) == {
        "build": {},
        "clip_flags": [],
        "xformers": "xformers==0.0.23.post1",
    }
    assert wu.build_steps(DEV_PREPARE) == {
        "build": {"wheel": "", "setuptools": "69.5.1"},
        "clip_flags": ["--no-build-isolation"],
        "xformers": "xformers==0.0.30",
    }
    # Defined but never called: not a step.
    uncalled = DEV_PREPARE.replace("    ensure_build_dependencies()\n", "")
    assert wu.build_steps(uncalled)["build"] == {}


def test_the_plan_notes_the_build_steps_old_to_new_and_what_the_toolkit_does():
    notes = wu.build_notes(wu.build_steps(V1_10_1_PREPARE), wu.build_steps(DEV_PREPARE), LOCK_VENV, "69.5.1")
    assert notes == [
        "build dependencies the launcher installs before CLIP: (none) -> setuptools==69.5.1, wheel (any "
        "version); the toolkit installs the lock's setuptools 69.5.1, wheel 0.45.1 into the venv before it "
        "builds CLIP either way",
        "the launcher installs CLIP with (no flags) -> --no-build-isolation; the toolkit builds CLIP from the "
        "lock's archive with --no-deps --no-build-isolation already",
        "XFORMERS_PACKAGE xformers==0.0.23.post1 -> xformers==0.0.30: not installed: the WebUI installs it only "
        "under --xformers, which the toolkit does not pass (CPU and Mac hosts; sdenv_webui_extra_args could add "
        "it), so the lock carries no xformers pin",
    ]
    # Going back (a downgrade is an upgrade) says the same, new -> old; the same commit says nothing; an old
    # commit the cache lacks is '?'.
    back = wu.build_notes(wu.build_steps(DEV_PREPARE), wu.build_steps(V1_10_1_PREPARE), LOCK_VENV, "69.5.1")
    assert back[0].startswith(
        "build dependencies the launcher installs before CLIP: setuptools==69.5.1, wheel"
    )
    assert "-> (none);" in back[0] and "xformers==0.0.30 -> xformers==0.0.23.post1" in back[2]
    assert wu.build_notes(wu.build_steps(DEV_PREPARE), wu.build_steps(DEV_PREPARE), LOCK_VENV, "69.5.1") == []
    unknown = wu.build_notes(None, wu.build_steps(DEV_PREPARE), LOCK_VENV, "69.5.1")
    assert "XFORMERS_PACKAGE ? -> xformers==0.0.30" in unknown[2]


def test_a_forced_setuptools_that_the_requirements_contradict_is_said():
    forced = wu.build_steps(DEV_PREPARE.replace("setuptools==69.5.1", "setuptools==70.1.0"))
    notes = wu.build_notes(wu.build_steps(DEV_PREPARE), forced, LOCK_VENV, "69.5.1")
    assert notes[0] == (
        "the launcher forces setuptools==70.1.0 before CLIP, then requirements_versions.txt installs 69.5.1: "
        "the lock follows requirements_versions.txt (installed last)"
    )


def test_the_build_pins_become_lock_pins_where_the_requirements_are_silent():
    build = wu.build_steps(DEV_PREPARE.replace("install wheel", "install wheel==0.46.0"))["build"]
    no_setuptools = "GitPython==3.1.32\r\nsafetensors==0.4.5\r\n"
    values, unread, _ = wu.wanted_values(
        wu.launcher_pins(LAUNCH_UTILS), wu.macos_torch_commands(MACOS_ENV), no_setuptools, "dev", NEW, build
    )
    pins = {path: (value, source) for path, value, source in values}
    assert pins[("webui_venv", "setuptools")] == ("69.5.1", "the launcher's build dependencies (setuptools)")
    assert pins[("webui_venv", "wheel")] == ("0.46.0", "the launcher's build dependencies (wheel)")
    assert "requirements_versions.txt" not in unread
    # The dev branch's own files: requirements_versions.txt pins setuptools; wheel is unpinned (the lock keeps
    # its own), so no wheel line.
    values, _, _ = wu.wanted_values(
        wu.launcher_pins(LAUNCH_UTILS), wu.macos_torch_commands(MACOS_ENV), REQUIREMENTS, "dev", NEW,
        wu.build_steps(DEV_PREPARE)["build"],
    )  # fmt: skip
    pins = {path: (value, source) for path, value, source in values}
    assert pins[("webui_venv", "setuptools")] == ("69.5.1", "requirements_versions.txt")
    assert ("webui_venv", "wheel") not in pins


def test_a_build_package_the_lock_does_not_carry_is_said_as_not_installed():
    more = wu.build_steps(
        DEV_PREPARE.replace(
            'run_pip("install wheel", "wheel")', 'run_pip("install wheel pip==24.0", "wheel")'
        )
    )
    (note,) = [
        n for n in wu.build_notes(wu.build_steps(DEV_PREPARE), more, LOCK_VENV) if "build dependencies" in n
    ]
    assert "-> pip==24.0, setuptools==69.5.1, wheel (any version);" in note
    assert "pip (not in the lock: the toolkit does not install it), setuptools 69.5.1, wheel 0.45.1" in note
