"""text_file (plugins/modules/text_file.py) through sdenv_atomic.ensure_file_content: the write the dummy's
files take over SSH (content as a pipelined argument, no temporary file for the dummy to read)."""

import os

import pytest
import sdenv_atomic as sa

from tests.unit.conftest import secret_unchanged


def test_a_file_is_written_once_then_left_alone_until_its_bytes_or_mode_differ(tmp_path):
    path = tmp_path / "webui-user.sh"
    assert sa.ensure_file_content(str(path), b"#!/bin/bash\nA=1\n", 0o755) == (True, None)
    assert path.read_bytes() == b"#!/bin/bash\nA=1\n" and path.stat().st_mode & 0o7777 == 0o755
    inode = path.stat().st_ino
    assert sa.ensure_file_content(str(path), b"#!/bin/bash\nA=1\n", 0o755) == (False, b"#!/bin/bash\nA=1\n")
    assert path.stat().st_ino == inode  # not rewritten
    os.chmod(path, 0o644)
    assert sa.ensure_file_content(str(path), b"#!/bin/bash\nA=1\n", 0o755)[0] is True
    assert path.stat().st_mode & 0o7777 == 0o755
    changed, before = sa.ensure_file_content(str(path), b"#!/bin/bash\nA=2\n", 0o755)
    assert (changed, before, path.read_bytes()) == (True, b"#!/bin/bash\nA=1\n", b"#!/bin/bash\nA=2\n")


def test_check_mode_reports_the_change_and_writes_nothing(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_bytes(b"old\n")
    assert sa.ensure_file_content(str(path), b"new\n", 0o644, check_mode=True) == (True, b"old\n")
    assert path.read_bytes() == b"old\n"
    missing = tmp_path / "a" / "b" / "lock.txt"
    assert sa.ensure_file_content(str(missing), b"x", below=str(tmp_path), check_mode=True) == (True, None)
    assert not (tmp_path / "a").exists()


def test_missing_folders_below_the_given_one_are_made_and_none_elsewhere(tmp_path):
    path = tmp_path / "home" / ".cache" / "sdenv" / "venv-lock" / "Linux-x86_64-py3.10.txt"
    (tmp_path / "home").mkdir()
    with pytest.raises(FileNotFoundError):  # without `below`, a missing folder is an error
        sa.ensure_file_content(str(path), b"pins\n")
    assert sa.ensure_file_content(str(path), b"pins\n", below=str(tmp_path / "home"))[0]
    assert path.read_bytes() == b"pins\n"
    assert (path.parent.stat().st_mode & 0o7777) == 0o755
    with pytest.raises(ValueError, match="is not below"):
        sa.ensure_file_content(str(tmp_path / "x" / "f"), b"", below=str(tmp_path / "home"))


def test_a_link_at_the_file_is_refused_never_read_or_written_through(tmp_path, secret):
    path = tmp_path / "webui-user.sh"
    path.symlink_to(secret)
    with pytest.raises(sa.LinkRefused):
        sa.ensure_file_content(str(path), b"mine\n", 0o755)
    assert path.is_symlink() and secret_unchanged(secret)


def test_a_link_in_a_folder_on_the_way_is_refused(tmp_path, foreign, secret):
    home = tmp_path / "home"
    home.mkdir()
    foreign(home)
    (home / "webui").symlink_to(secret.parent)
    foreign(home / "webui")
    with pytest.raises(sa.LinkRefused):
        sa.ensure_file_content(str(home / "webui" / "secret"), b"owned\n", 0o644)
    assert secret_unchanged(secret)
