"""What a deleted account owned in the shared temp directories goes, and nothing else (no link followed).

Real files in a temporary directory standing in for /tmp: the account is a uid nobody has here, and the
files it "owned" are chowned to it, so this needs root (as the integration tests and CI do).
"""

import os

import pytest
from account_leftovers import remove_files_owned_by

ACCOUNT_UID = 54321  # no account on the test machine has it

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowning files to another uid needs root")


def made(path, uid=None, directory=False, link_to=None):
    if link_to is not None:
        os.symlink(link_to, path)
    elif directory:
        os.mkdir(path)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("x")
    if uid is not None:
        os.lchown(path, uid, -1)
    return str(path)


def test_only_what_the_uid_owns_goes_and_no_link_is_followed(tmp_path):
    top, outside = tmp_path / "tmp", tmp_path / "outside"
    top.mkdir()
    outside.mkdir()
    # What a dead account's processes leave: torch's and uv's temp files and directories.
    torch_file = made(top / "tmpabc123.pt", ACCOUNT_UID)
    uv_dir = made(top / ".tmpUvXyZ", ACCOUNT_UID, directory=True)
    uv_file = made(top / ".tmpUvXyZ" / "wheel.whl", ACCOUNT_UID)
    in_root_dir = made(top / "root-dir", directory=True)
    its_file_there = made(top / "root-dir" / "its.log", ACCOUNT_UID)
    # A directory of the account that holds somebody else's file: kept, with that file.
    mixed = made(top / "mixed", ACCOUNT_UID, directory=True)
    roots_file = made(top / "mixed" / "roots.txt")
    # Links: the account's own link goes (itself); nobody's link is followed to the account's files.
    target_dir = made(outside / "its-dir", ACCOUNT_UID, directory=True)
    target_file = made(outside / "its-dir" / "keep.txt", ACCOUNT_UID)
    its_link = made(top / "its-link", ACCOUNT_UID, link_to=target_dir)
    roots_link = made(top / "roots-link", link_to=target_dir)
    others = made(top / "other.txt")

    # Places never entered: the state directory (and what other accounts still use), wherever they are.
    state = made(top / "state", directory=True)
    its_cache = made(top / "state" / "uv-cache", ACCOUNT_UID, directory=True)

    removed = remove_files_owned_by(ACCOUNT_UID, tops=(str(top),), keep=[state])

    assert sorted(removed) == sorted([torch_file, uv_file, uv_dir, its_file_there, its_link])
    for path in removed:
        assert not os.path.lexists(path), path
    for path in (in_root_dir, mixed, roots_file, target_dir, target_file, roots_link, others, its_cache):
        assert os.path.lexists(path), path


def test_a_uid_that_owns_nothing_changes_nothing_and_a_missing_top_is_skipped(tmp_path):
    made(tmp_path / "a")
    made(tmp_path / "b", directory=True)
    before = sorted(os.listdir(tmp_path))
    assert remove_files_owned_by(ACCOUNT_UID, tops=(str(tmp_path), str(tmp_path / "absent"))) == []
    assert sorted(os.listdir(tmp_path)) == before
