"""scripts/role_docs.py: every role's README carries variable tables equal to its argument specs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import role_docs  # noqa: E402

SPEC = {
    "argument_specs": {
        "main": {
            "short_description": "Do C(the) thing.",
            "options": {
                "sdenv_a": {
                    "type": "list",
                    "elements": "str",
                    "required": True,
                    "description": ["One", "I(two)"],
                },
                "sdenv_b": {"type": "str", "default": "no", "no_log": True, "description": "a | b"},
            },
        }
    }
}


def test_tables_render_type_default_markup_and_secrets():
    text = role_docs.tables(SPEC)
    assert "### Entry point `main`" in text and "Do `the` thing." in text
    assert "| `sdenv_a` | list of str | required | One *two* |" in text
    assert "| `sdenv_b` | str | `'no'` | a \\| b (secret: never logged) |" in text


def test_render_replaces_only_the_marked_section():
    readme = f"# Role\nprose\n{role_docs.BEGIN}\nold table\n{role_docs.END}\ntail\n"
    updated = role_docs.render(readme, "NEW")
    assert updated == f"# Role\nprose\n{role_docs.BEGIN}\nNEW\n{role_docs.END}\ntail\n"
    assert role_docs.render("# no markers\n", "NEW") is None


def test_every_role_readme_is_current():
    """The check make lint runs: a spec change without `make role-docs` fails here too."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    roles = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
    assert roles and all((ROOT / "roles" / role / "README.md").exists() for role in roles)
