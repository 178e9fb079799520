"""sdenv_atomic: the no-follow walk root uses in the dummy's tree, and the atomic write built on it.

"Another account" is uid 65534 when the tests run as root (the files are chowned to it); as any other user,
the module is made to believe it runs as a different uid, so the tester's own files are another account's.
"""

import os
import stat

import pytest
import sdenv_atomic as sa

from tests.unit.conftest import OTHER_UID, RUNNER_UID, secret_unchanged

OTHER = OTHER_UID


def dummy_home(tmp_path, foreign):
    home = tmp_path / "home"
    (home / "webui" / "models").mkdir(parents=True)
    for path in (home, home / "webui", home / "webui" / "models"):
        foreign(path)
    return home


@pytest.mark.parametrize("where", ["home", "webui", "models"])
def test_a_link_in_any_component_of_the_dummys_tree_is_refused(tmp_path, foreign, secret, where):
    home = dummy_home(tmp_path, foreign)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The component named `where` below the home becomes a link (to a directory root owns).
    chain = {
        "home": home / "link",
        "webui": home / "webui" / "link",
        "models": home / "webui" / "models" / "link",
    }
    link = chain[where]
    link.symlink_to(elsewhere)
    foreign(link)
    with pytest.raises(sa.LinkRefused) as refused:
        sa.write_bytes_atomic(str(link / "Lora.safetensors"), b"model")
    assert str(link) in str(refused.value) and "replace it with a real directory" in str(refused.value)
    assert list(elsewhere.iterdir()) == []


def test_a_link_root_made_in_the_dummys_directory_is_refused_too(tmp_path, foreign):
    # The dummy owns the directory, so it can swap root's link for its own at any moment.
    home = dummy_home(tmp_path, foreign)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "webui" / "models" / "Lora").symlink_to(elsewhere)
    with pytest.raises(sa.LinkRefused):
        sa.open_dir_nofollow(str(home / "webui" / "models" / "Lora"))


def test_a_link_another_account_made_in_a_sticky_directory_is_refused(tmp_path, foreign):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (tmp_path / "target").mkdir()
    link = shared / "x"
    link.symlink_to(tmp_path / "target")
    foreign(link)
    with pytest.raises(sa.LinkRefused):
        sa.open_dir_nofollow(str(link))


def test_links_only_the_runner_controls_are_followed(tmp_path):
    # As /var -> private/var on macOS: the link and its directory are the runner's (root's) alone.
    (tmp_path / "private" / "var").mkdir(parents=True)
    (tmp_path / "var").symlink_to("private/var")
    (tmp_path / "abs").symlink_to(tmp_path / "private")
    sa.write_bytes_atomic(str(tmp_path / "var" / "f"), b"one")
    assert (tmp_path / "private" / "var" / "f").read_bytes() == b"one"
    fd = sa.open_dir_nofollow(str(tmp_path / "abs" / "var" / ".." / "var"))
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "private" / "var").stat())
    finally:
        os.close(fd)


def test_a_link_at_the_last_component_is_never_read_through(tmp_path, foreign, secret):
    home = dummy_home(tmp_path, foreign)
    cache = home / "webui" / "cache.json"
    cache.symlink_to(secret)
    foreign(cache)
    with pytest.raises(sa.LinkRefused):
        sa.read_bytes_nofollow(str(cache))
    with pytest.raises(sa.LinkRefused):
        sa.open_nofollow(str(cache), os.O_WRONLY | os.O_CREAT)
    assert secret_unchanged(secret)


def test_the_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path, foreign, secret):
    home = dummy_home(tmp_path, foreign)
    cache = home / "webui" / "cache.json"
    cache.symlink_to(secret)
    sa.write_bytes_atomic(str(cache), b"{}\n", mode=0o644)
    assert not cache.is_symlink() and cache.read_bytes() == b"{}\n"
    assert secret_unchanged(secret)
    assert [p.name for p in (home / "webui").iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another account's needs root")
def test_what_the_atomic_write_creates_is_owned_as_asked(tmp_path):
    path = tmp_path / "profile"
    sa.write_bytes_atomic(str(path), b"x", mode=0o640, uid=OTHER, gid=OTHER)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER, OTHER, 0o640)


def test_the_atomic_write_sets_the_mode_asked(tmp_path):
    path = tmp_path / "f"
    sa.write_bytes_atomic(str(path), b"x", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"x"


def test_a_missing_directory_is_the_usual_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        sa.write_bytes_atomic(str(tmp_path / "absent" / "f"), b"x")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        sa.open_dir_nofollow(str(tmp_path / "file"))


def test_a_loop_of_links_ends(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError) as error:
        sa.open_dir_nofollow(str(tmp_path / "a"))
    assert not isinstance(error.value, sa.LinkRefused)


def test_makedirs_makes_the_missing_folders_owned_as_asked_and_refuses_a_link(tmp_path, foreign):
    webui = dummy_home(tmp_path, foreign) / "webui"
    uid = OTHER if RUNNER_UID == 0 else -1
    fd = sa.makedirs_nofollow(str(webui / "models" / "Lora"), str(webui), mode=0o755, uid=uid, gid=uid)
    os.close(fd)
    made = (webui / "models" / "Lora").stat()
    assert stat.S_IMODE(made.st_mode) == 0o755 and made.st_uid == (OTHER if uid != -1 else RUNNER_UID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (webui / "models" / "Stable-diffusion").symlink_to(elsewhere)  # even root's own link: the dummy's folder
    with pytest.raises(sa.LinkRefused):
        sa.makedirs_nofollow(str(webui / "models" / "Stable-diffusion" / "sub"), str(webui))
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ValueError):
        sa.makedirs_nofollow(str(tmp_path), str(webui))


def test_own_dir_hands_a_directory_over_but_never_a_links_target(tmp_path, foreign):
    # As homebrew_prefix does for /opt/homebrew/bin, ...: made or corrected through descriptors.
    prefix = tmp_path / "homebrew"
    prefix.mkdir()
    foreign(prefix)
    uid = OTHER if RUNNER_UID == 0 else RUNNER_UID
    assert sa.own_dir_nofollow(str(prefix / "bin"), uid, uid, 0o775, check_mode=True) is True
    assert not (prefix / "bin").exists()
    assert sa.own_dir_nofollow(str(prefix / "bin"), uid, uid, 0o775) is True
    st = (prefix / "bin").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o775) == (uid, 0o775)
    assert sa.own_dir_nofollow(str(prefix / "bin"), uid, uid, 0o775) is False
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (prefix / "var").symlink_to(etc)
    with pytest.raises(sa.LinkRefused):
        sa.own_dir_nofollow(str(prefix / "var"), uid, uid, 0o775)
    st = etc.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (RUNNER_UID, 0o755)
