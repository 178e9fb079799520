"""The user-facing contract (ARCHITECTURE: targets and variables) stays whole as areas add mk/*.mk files."""

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
