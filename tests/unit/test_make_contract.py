"""The user-facing contract (ARCHITECTURE: targets and variables) stays whole as areas add mk/*.mk files."""

import re
import subprocess
from pathlib import Path

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
