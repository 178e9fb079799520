"""Every `ansible.module_utils.X` a module or module_util imports is on Ansible's path whatever the roles a
play includes: in plugins/module_utils (always on the path), in the importing role's own module_utils, or in
Ansible itself. A role's module_utils joins the path only once that role is included, so an import of another
role's module_utils works by the accident of include order and breaks when that role is skipped or not chosen
(e.g. `sdenv_apps: [comfyui]`)."""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def names_in(folder):
    """The importable names a module_utils folder holds: its modules and its packages."""
    return {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}


SHARED = names_in(ROOT / "plugins" / "module_utils")
CODE = sorted(
    [*ROOT.glob("plugins/modules/*.py"), *ROOT.glob("plugins/module_utils/*.py"),
     *ROOT.glob("roles/*/library/*.py"), *ROOT.glob("roles/*/module_utils/*.py")]
)  # fmt: skip


def module_utils_imports(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ansible.module_utils."):
            yield node.module.split(".")[2]


def reachable(path):
    """The names an import from `path` can find without relying on another role."""
    own = set()
    if path.parts[-3] != "plugins" and path.parent.parent.parent.name == "roles":
        own = names_in(path.parent.parent / "module_utils")
    return SHARED | own


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_utils_imports_do_not_depend_on_another_role(path):
    names = reachable(path)
    for name in module_utils_imports(path):
        if name in names or importlib.util.find_spec(f"ansible.module_utils.{name}") is not None:
            continue
        pytest.fail(f"{path.relative_to(ROOT)} imports ansible.module_utils.{name}, which is neither shared "
                    "(plugins/module_utils), its role's own nor Ansible's")  # fmt: skip


def test_the_check_sees_a_cross_role_import(tmp_path):
    """The rule above can fail: a role's module importing another role's module_util is refused."""
    role = tmp_path / "roles" / "comfyui"
    (role / "library").mkdir(parents=True)
    (role / "module_utils").mkdir()
    module = role / "library" / "m.py"
    module.write_text("from ansible.module_utils.uv_install import install\n")
    assert "uv_install" not in reachable(module)
    assert list(module_utils_imports(module)) == ["uv_install"]
