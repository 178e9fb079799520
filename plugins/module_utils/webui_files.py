"""File helpers shared by the webui role's modules: atomic writes and streaming hashes."""

import hashlib
import os

try:
    from ansible.module_utils.sdenv_atomic import write_bytes_atomic
except ImportError:  # unit tests import module_utils directly
    from sdenv_atomic import write_bytes_atomic


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path, data, mode=0o644):
    """Atomic replace of path with data (bytes), making its directory: the toolkit's shared write."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, data, mode=mode)
