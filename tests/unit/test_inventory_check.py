"""scripts/inventory_check.py: one sentence for a missing, unparsable or empty inventory and an unmatched LIMIT,
with Ansible's own parser (the make runs are in tests/integration/test_preflight.py)."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
spec = importlib.util.spec_from_file_location("inventory_check", ROOT / "scripts" / "inventory_check.py")
inventory_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inventory_check)

FLEET = str(ROOT / "inventory" / "examples" / "fleet.yml")
LOCAL = str(ROOT / "inventory" / "localhost.yml")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("all: [\n", "cannot be read: YAML parsing failed"),
        (
            "- localhost\n",
            "cannot be read: YAML inventory has invalid structure, it should be a dictionary, got: a list",
        ),
        ("all:\n  hosts: {}\n", "lists no host"),
        ("", "lists no host"),
    ],
)
def test_inventories_that_give_no_host(tmp_path, content, words):
    path = tmp_path / "hosts.yml"
    path.write_text(content)
    sentence = inventory_check.problem(str(path), "")
    assert sentence.startswith(f"The inventory {path} (INVENTORY=)") and words in sentence, sentence
    assert sentence.count(". ") == 0 and sentence.endswith(").")  # one sentence


def test_the_line_of_a_yaml_error_is_named(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    a: {\n")
    assert "(line 4)" in inventory_check.problem(str(path), "")


def test_a_missing_inventory_needs_no_ansible(tmp_path):
    missing = tmp_path / "nope.yml"
    assert inventory_check.early_problem(str(missing)) == (
        f"The inventory {missing} (INVENTORY=) does not exist: give an existing file (inventory/localhost.yml is"
        " this machine; inventory/examples/fleet.yml shows several)."
    )
    assert inventory_check.early_problem("  ").startswith("INVENTORY is empty")


def test_a_directory_names_the_file_that_fails(tmp_path):
    (tmp_path / "good.yml").write_text("all:\n  hosts:\n    a:\n")
    (tmp_path / "bad.yml").write_text("all: [\n")
    assert f"The inventory {tmp_path / 'bad.yml'} (INVENTORY=) cannot be read" in inventory_check.problem(
        str(tmp_path), ""
    )


@pytest.mark.parametrize(
    ("inventory", "limit", "words"),
    [
        (LOCAL, "nohost", "LIMIT=nohost names nohost, which matches no host"),
        (LOCAL, "localhost,nohost", "names nohost"),
        (FLEET, "localhost", "names localhost, which matches no host"),  # only the implicit localhost
        (FLEET, "studio-*:!studio-*", "LIMIT=studio-*:!studio-* leaves no host"),
        (FLEET, "macs:&nothere", "names nothere"),
    ],
)
def test_a_limit_that_matches_nothing(inventory, limit, words):
    sentence = inventory_check.problem(inventory, limit)
    assert words in sentence, sentence


@pytest.mark.parametrize(
    ("inventory", "limit"),
    [(LOCAL, ""), (LOCAL, "localhost"), (FLEET, "studio-*"), (FLEET, "macs:!studio-1.local")],
)
def test_good_inventories_and_limits_pass(inventory, limit):
    assert inventory_check.problem(inventory, limit) is None
