"""Test-wide setup: make every module_utils directory importable, as Ansible does on a host."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# tests/fixtures holds the fixture builders (bare repos, HTTP servers, model files) every area reuses.
for module_utils in [
    ROOT / "tests" / "fixtures",
    ROOT / "plugins" / "module_utils",
    *sorted(ROOT.glob("roles/*/module_utils")),
]:
    if str(module_utils) not in sys.path:
        sys.path.insert(0, str(module_utils))
