# Controller side of webui_venv: the venv install shows its progress through the same watch and line as
# model_file's downloads (plugins/module_utils/sdenv_progress.py). uv prints no progress without a terminal,
# so the module writes what it can measure (the growth of uv's cache in MB, MB/s, the packages the lock
# names) to a progress file next to its log; every line carries the elapsed time; there is no ETA (the lock
# holds no sizes).
from __future__ import annotations

import sys
from pathlib import Path

# Found above this file, in this repository or in the installed collection (as model_file's action does).
_SHARED = next(
    parent / "plugins" / "module_utils"
    for parent in Path(__file__).resolve().parents
    if (parent / "plugins" / "module_utils" / "sdenv_progress.py").is_file()
)
if str(_SHARED) not in sys.path:
    sys.path.append(str(_SHARED))
import sdenv_progress  # noqa: E402

ActionModule = sdenv_progress.progress_action("log_path", {"name": "WebUI venv", "phase": "checking"})
