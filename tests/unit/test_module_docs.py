"""Every module's DOCUMENTATION, EXAMPLES and RETURN are YAML that parses, with an option entry per argument:
ansible-doc and ansible-lint read them, and a description with an unquoted ': ' breaks both (silently for
ansible-lint, which only prints an error and goes on)."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted([*ROOT.glob("plugins/modules/*.py"), *ROOT.glob("roles/*/library/*.py")])


def blocks(path):
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_documentation_parses(path):
    found = blocks(path)
    assert "DOCUMENTATION" in found, f"{path.name} has no DOCUMENTATION"
    for name, text in found.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} {name} is not YAML: {exc}")
    doc = yaml.safe_load(found["DOCUMENTATION"])
    assert doc["module"] == path.stem, f"{path.name} documents module {doc['module']}"
