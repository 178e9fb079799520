# Controller side of webui_git_tree: the clone or fetch shows its progress (objects, MB, MB/s, elapsed, ETA)
# through the same watch and line as model_file's downloads (plugins/module_utils/sdenv_progress.py). The
# module writes git's --progress counters to a progress file next to the tree; the watch reads it every few
# seconds over a copy of the connection and prints `[host] WebUI tree  clone Receiving objects  ...`.
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

ActionModule = sdenv_progress.progress_action("dest", {"name": "tree", "name_arg": "label", "phase": "git"})
