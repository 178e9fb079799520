"""Fixtures the unit tests of root's no-follow file handling share (sdenv_atomic and its users)."""

import os

import pytest
import sdenv_atomic

OTHER_UID = 65534
RUNNER_UID = os.geteuid()  # taken before any test makes the code believe it runs as another uid


@pytest.fixture
def foreign(monkeypatch):
    """Make a path (a link or a directory) belong to another account than the one running the code:
    uid 65534 when the tests run as root; as any other user, the code is made to believe it runs as
    another uid, so the tester's own files are another account's."""
    if os.geteuid() == 0:
        return lambda path: os.lchown(path, OTHER_UID, OTHER_UID)
    monkeypatch.setattr(sdenv_atomic.os, "geteuid", lambda: RUNNER_UID + 1)
    return lambda path: None


@pytest.fixture
def secret(tmp_path):
    """A file standing for a root-only one (/etc/shadow): nothing may read, change or re-own it."""
    target = tmp_path / "secret"
    target.write_bytes(b"root-only\n")
    target.chmod(0o600)
    return target


def secret_unchanged(secret):
    st = secret.stat()
    return secret.read_bytes() == b"root-only\n" and st.st_mode & 0o7777 == 0o600 and st.st_uid == RUNNER_UID
