"""The user-facing contract (ARCHITECTURE: targets and variables) stays whole as areas add mk/*.mk files."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_TARGETS = [
    "provision", "verify", "reset-dummy", "remove-dummy", "snapshot", "snapshots", "rollback", "snapshot-check",
    "snapshot-prune", "run", "pin-models", "test", "lint", "bench", "help", "lock-venv", "bundle", "bundle-check",
]  # fmt: skip
CONTRACT_VARIABLES = [
    "INVENTORY=",
    "LIMIT=",
    "CHECK=1",
    "ARGS=",
    "CONFIRM=yes",
    "FORCE=yes",
    "ADOPT=yes",
    "LABEL=",
    "TO=",
    "PATHS=",
    "BUNDLE=",
    "PLATFORM=",
    "OUT=",
]


def test_make_help_lists_every_contract_target_and_variable():
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True
    )
    listed = {
        line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.split()
    }
    missing = [t for t in CONTRACT_TARGETS if t not in listed]
    assert not missing, f"make help does not list {missing}"
    for variable in CONTRACT_VARIABLES:
        assert variable in result.stdout, f"make help does not document {variable}"


def test_readme_opens_with_the_two_commands():
    for readme in ("README.md", "README.ja.md"):
        opening = (ROOT / readme).read_text(encoding="utf-8").splitlines()[:12]
        text = "\n".join(opening)
        assert "make provision" in text and "make test" in text, readme


def test_both_readmes_have_a_row_for_every_contract_target():
    for readme in ("README.md", "README.ja.md"):
        rows = [
            line
            for line in (ROOT / readme).read_text(encoding="utf-8").splitlines()
            if line.startswith("| `make ")
        ]
        missing = [t for t in CONTRACT_TARGETS if not any(f"`make {t}`" in row for row in rows)]
        assert not missing, f"{readme}'s table of targets has no row for {missing}"


def test_make_help_lists_each_variable_once():
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True
    )
    variables = result.stdout.split("Variables:", 1)[1]
    names = [
        line.split()[0] for line in variables.splitlines() if line.startswith("  ") and "=" in line.split()[0]
    ]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"make help lists {repeated} more than once"
    assert "make verify: re-hash every model file" in variables  # the second meaning is kept, unnamed


def test_every_path_the_readmes_and_ansible_cfg_name_exists():
    """The README's opening and ansible.cfg's plugin folders point at things that are there."""
    for readme in ("README.md", "README.ja.md"):
        opening = "\n".join((ROOT / readme).read_text(encoding="utf-8").splitlines()[:12])
        for path in re.findall(r"inventory/[\w./-]+\.yml", opening):
            assert (ROOT / path).exists(), f"{readme} names {path}, which does not exist"
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "ansible.cfg")
    for key in ("roles_path", "library", "module_utils", "action_plugins", "callback_plugins"):
        for folder in config["defaults"][key].split(":"):
            assert (ROOT / folder).is_dir(), f"ansible.cfg {key} names {folder}, which is not a folder"


# Every value given to make is text: `$(shell ...)` in it never runs (not under make -n, not in a recipe's
# shell), and quotes in it neither break nor extend the command line.
VALUE_TARGETS = [
    "provision", "verify", "snapshot", "snapshots", "rollback", "run", "pin-models", "bundle", "bundle-check",
]  # fmt: skip
VALUE_VARIABLES = [
    "INVENTORY", "LIMIT", "CHECK", "ARGS", "CONFIRM", "FORCE", "ADOPT", "STRICT", "JSON", "LABEL", "TO", "PATHS", "DEEP", "LIVE",
    "OFFLINE", "SMALL", "VERIFY_REPORTS", "PLATFORM", "OUT", "BUNDLE", "INDEX_URL", "ARCHIVE", "MODELS", "BENCH",
]  # fmt: skip


@pytest.mark.parametrize("given", ["command line", "environment"])
def test_make_never_expands_a_value(tmp_path, given):
    values = {
        name: f"$(shell touch {tmp_path}/{name}) $$(touch {tmp_path}/sh-{name})" for name in VALUE_VARIABLES
    }
    for target in VALUE_TARGETS:
        argv = ["make", "-n", "-C", str(ROOT), target]
        env = dict(os.environ)
        if given == "command line":
            argv += [f"{name}={value}" for name, value in values.items()]
        else:
            env.update(values)
        subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_values_reach_the_playbook_verbatim(tmp_path):
    marker = tmp_path / "ran"
    result = subprocess.run(
        [
            "make", "-s", "-C", str(ROOT), "provision", "LIMIT=localhost",
            f"ARGS=--list-hosts -e \"sdenv_x='a b'\" -e \"sdenv_y=$(touch {marker})\"",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "localhost" in result.stdout
    assert not marker.exists()
    quoted = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "provision", 'LIMIT=it\'s "here"'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert quoted.returncode == 2
    assert "LIMIT=it's \"here\" names it's, which matches no host" in quoted.stderr, quoted.stderr


@pytest.mark.parametrize("target", [["upgrade", "WEBUI=-v0"], ["upgrade", "COMFYUI=-v0"], ["rollback"]])
def test_a_value_beginning_with_a_dash_reaches_the_upgrade_script_as_a_value(tmp_path, target):
    # Given as a word of its own, `--args --diff` made argparse read --diff as an option: the target failed
    # before it began. The script's own first check (no lock.yml here) shows the values were taken.
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), *target, "ARGS=--diff", "LIMIT=-nothing", "INDEX_URL=-x",
         f"INVENTORY={tmp_path}/hosts.yml"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert "expected one argument" not in result.stderr, result.stderr
    assert f"there is no lock {tmp_path}/group_vars/all/lock.yml" in result.stdout, (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize("args", ["--skip-tags always", "--start-at-task 'Install the WebUI'", "--step"])
def test_args_cannot_skip_the_preflight(args):
    # --list-tasks: were the option let through, nothing would run on main either.
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "provision", f"ARGS={args} --list-tasks"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(f"ARGS={args} --list-tasks "), result.stderr
    assert "preflight" in result.stderr.splitlines()[0]


def test_tags_narrow_a_run_but_never_drop_the_preflight():
    # The preflight task is tagged `always`, which --tags cannot leave out (only --skip-tags always can,
    # refused above): a regression guard for that tag.
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "provision", "ARGS=--tags models --list-tasks"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if "TAGS: [always]" in line]
    assert any(line.startswith("Check the values this target uses") for line in listed), result.stdout
