"""Test-wide setup: make every module_utils directory importable, as Ansible does on a host."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for module_utils in [ROOT / "plugins" / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]:
    if str(module_utils) not in sys.path:
        sys.path.insert(0, str(module_utils))
