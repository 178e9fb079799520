"""Homebrew's command lines and output parsing (macOS logic, run here without a Mac).

The `brew` outputs below are RECORDED SHAPES, not captured on a Mac during this test run: they follow
the documented format of `brew list --formula --versions` (name, then each installed version).
"""

import subprocess

import pytest
from homebrew_cli import (
    BREW_ENVIRONMENT,
    HomebrewError,
    created_paths_for,
    ensure_formulae,
    formula_key,
    install_argv,
    list_versions_argv,
    missing_formulae,
    parse_list_versions,
    prefix_directories,
    prefix_for_architecture,
    repository_for_prefix,
    shellenv_line,
)
from removal_allowlist import RemovalAllowlist

GUIDE_FORMULAE = ["cmake", "protobuf", "rust", "python@3.10", "git", "wget"]

# Recorded shape: a Homebrew with some of the guide's formulae (and their dependencies) installed.
LIST_VERSIONS_PARTIAL = """\
ca-certificates 2024.7.2
cmake 3.30.2
git 2.46.0
libunistring 1.2
mpdecimal 4.0.0
openssl@3 3.3.1
python@3.10 3.10.14_1
sqlite 3.46.0
xz 5.6.2
"""
# Recorded shape: after `brew install protobuf rust wget`; two kept versions of cmake, newest last.
LIST_VERSIONS_ALL = LIST_VERSIONS_PARTIAL.replace("cmake 3.30.2", "cmake 3.29.6 3.30.2") + (
    "abseil 20240722.0\nprotobuf 27.3\nrust 1.80.1\nwget 1.24.5\n"
)


class Brew:
    """Stands in for run_command: answers `brew list` from successive recorded outputs."""

    def __init__(self, listings, install_rc=0, install_err=""):
        self.listings = list(listings)
        self.install_rc, self.install_err = install_rc, install_err
        self.calls = []

    def __call__(self, argv, environ):
        self.calls.append((list(argv), dict(environ)))
        if argv[1] == "list":
            return 0, self.listings.pop(0), ""
        return self.install_rc, "", self.install_err


def test_prefix_follows_the_architecture():
    assert prefix_for_architecture("arm64") == "/opt/homebrew"
    assert prefix_for_architecture("x86_64") == "/usr/local"
    assert repository_for_prefix("/opt/homebrew") == "/opt/homebrew"
    assert repository_for_prefix("/usr/local") == "/usr/local/Homebrew"


def test_shellenv_line_is_the_guides():
    assert shellenv_line("/opt/homebrew") == 'eval "$(/opt/homebrew/bin/brew shellenv)"'
    assert shellenv_line("/usr/local") == 'eval "$(/usr/local/bin/brew shellenv)"'


def test_command_lines():
    assert list_versions_argv("/opt/homebrew/bin/brew") == [
        "/opt/homebrew/bin/brew",
        "list",
        "--formula",
        "--versions",
    ]
    assert install_argv("/opt/homebrew/bin/brew", ["rust", "wget"]) == [
        "/opt/homebrew/bin/brew", "install", "--formula", "rust", "wget",
    ]  # fmt: skip


def test_parse_list_versions_keeps_every_version_in_order():
    listed = parse_list_versions(LIST_VERSIONS_ALL)
    assert listed["cmake"] == ["3.29.6", "3.30.2"]
    assert listed["python@3.10"] == ["3.10.14_1"]
    assert "rust" not in parse_list_versions(LIST_VERSIONS_PARTIAL)


def test_missing_formulae_keep_order_and_accept_tap_names():
    listed = parse_list_versions(LIST_VERSIONS_PARTIAL)
    assert missing_formulae(GUIDE_FORMULAE, listed) == ["protobuf", "rust", "wget"]
    assert missing_formulae(["homebrew/core/python@3.10", "wget", "wget"], listed) == ["wget"]
    assert formula_key("homebrew/core/python@3.10") == "python@3.10"


def test_ensure_formulae_installs_only_what_is_missing_and_records_the_newest_versions():
    brew = Brew([LIST_VERSIONS_PARTIAL, LIST_VERSIONS_ALL])
    changed, installed, versions = ensure_formulae(brew, "/opt/homebrew/bin/brew", GUIDE_FORMULAE)
    assert changed and installed == ["protobuf", "rust", "wget"]
    assert [argv for argv, _ in brew.calls] == [
        ["/opt/homebrew/bin/brew", "list", "--formula", "--versions"],
        ["/opt/homebrew/bin/brew", "install", "--formula", "protobuf", "rust", "wget"],
        ["/opt/homebrew/bin/brew", "list", "--formula", "--versions"],
    ]
    # brew must neither update itself mid-run nor ask questions.
    assert all(env == BREW_ENVIRONMENT for _, env in brew.calls)
    assert BREW_ENVIRONMENT["HOMEBREW_NO_AUTO_UPDATE"] == "1" and BREW_ENVIRONMENT["NONINTERACTIVE"] == "1"
    assert versions == {
        "cmake": "3.30.2", "protobuf": "27.3", "rust": "1.80.1", "python@3.10": "3.10.14_1",
        "git": "2.46.0", "wget": "1.24.5",
    }  # fmt: skip


def test_second_run_installs_nothing():
    brew = Brew([LIST_VERSIONS_ALL])
    changed, installed, _ = ensure_formulae(brew, "/opt/homebrew/bin/brew", GUIDE_FORMULAE)
    assert (changed, installed) == (False, [])
    assert len(brew.calls) == 1


def test_check_mode_reports_without_installing():
    brew = Brew([LIST_VERSIONS_PARTIAL])
    changed, installed, versions = ensure_formulae(
        brew, "/opt/homebrew/bin/brew", GUIDE_FORMULAE, check_mode=True
    )
    assert changed and installed == ["protobuf", "rust", "wget"]
    assert [argv[1] for argv, _ in brew.calls] == ["list"]
    assert "rust" not in versions and versions["cmake"] == "3.30.2"


def test_failed_install_says_which_formulae_and_why():
    brew = Brew(
        [LIST_VERSIONS_PARTIAL],
        install_rc=1,
        install_err="Error: No such file or directory\nError: rust: failed\n",
    )
    with pytest.raises(
        HomebrewError, match=r"brew install protobuf rust wget` failed \(exit 1\): Error: rust: failed"
    ):
        ensure_formulae(brew, "/opt/homebrew/bin/brew", GUIDE_FORMULAE)


def test_an_alias_that_brew_lists_under_another_name_is_reported():
    brew = Brew([LIST_VERSIONS_ALL, LIST_VERSIONS_ALL.replace("rust 1.80.1\n", "")])
    with pytest.raises(HomebrewError, match="canonical name"):
        # `python3` is an alias: brew installs python@3.x and never lists `python3`.
        ensure_formulae(brew, "/opt/homebrew/bin/brew", ["python3"])


def test_apple_silicon_records_the_whole_prefix():
    assert created_paths_for("/opt/homebrew", set()) == ["/opt/homebrew"]
    assert prefix_directories("/opt/homebrew")[:2] == ["/opt/homebrew", "/opt/homebrew/Cellar"]


def test_apple_silicon_clones_into_an_empty_prefix_then_makes_the_rest(tmp_path):
    # The prefix is the brew repository there: git refuses to clone into a directory that has anything in
    # it, so only the prefix exists before the clone. There is no Homebrew/ inside it (Intel's repository).
    assert prefix_directories("/opt/homebrew", before_clone=True) == ["/opt/homebrew"]
    after = prefix_directories("/opt/homebrew")
    assert "/opt/homebrew/bin" in after and "/opt/homebrew/Homebrew" not in after
    # Intel: /usr/local/Homebrew is the (empty) clone target, made with the rest before the clone.
    assert "/usr/local/Homebrew" in prefix_directories("/usr/local", before_clone=True)
    assert prefix_directories("/usr/local", before_clone=True) == prefix_directories("/usr/local")
    # And git really does refuse a non-empty target while it accepts an empty one.
    upstream = tmp_path / "brew"
    subprocess.run(["git", "init", "-q", str(upstream)], check=True)
    subprocess.run(
        ["git", "-C", str(upstream), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q",
         "--allow-empty", "-m", "c"],
        check=True,
    )  # fmt: skip
    prefix = tmp_path / "prefix"
    (prefix / "Cellar").mkdir(parents=True)
    refused = subprocess.run(
        ["git", "clone", "-q", str(upstream), str(prefix)], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "not an empty directory" in refused.stderr
    (prefix / "Cellar").rmdir()
    subprocess.run(["git", "clone", "-q", str(upstream), str(prefix)], check=True)


def test_intel_records_only_homebrews_own_new_paths_never_usr_local():
    existing = {"/usr/local/Frameworks"}  # made by some other installer before Homebrew
    paths = created_paths_for("/usr/local", existing)
    assert paths == [
        "/usr/local/Homebrew", "/usr/local/Cellar", "/usr/local/Caskroom", "/usr/local/var/homebrew",
        "/usr/local/bin/brew",
    ]  # fmt: skip
    reset = RemovalAllowlist(
        "dummy", "/Users/dummy", ("/Users",), "/var/db/sdenv", homebrew_prefix="/usr/local"
    )
    for path in paths:
        assert reset.refusal(path) is None, path  # reset may delete every one of them
    assert "/usr/local" not in prefix_directories("/usr/local")
