"""The project's own tests.

Importing this package makes the fixture builders (tests/fixtures) and every module_utils directory
importable by their bare names, as Ansible does on a host. pytest imports it before tests/conftest.py, and
`python -m tests.fixtures.fixture_host` imports it too, so both see the same modules.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for _directory in [
    ROOT / "tests" / "fixtures",
    ROOT / "plugins" / "module_utils",
    *sorted(ROOT.glob("roles/*/module_utils")),
]:
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))
