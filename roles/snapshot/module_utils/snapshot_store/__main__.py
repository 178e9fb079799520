"""`python3 -m snapshot_store ...`, or `python3 path/to/snapshot_store ...` (the directory run as a script)."""

import os
import sys

if not __package__:
    # Run as a directory: its parent must be importable, and the package directory itself must not shadow
    # anything as a top-level name.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))

from snapshot_store.cli import main

sys.exit(main())
