"""The allow-list of what reset-dummy / remove-dummy may delete, over recorded Linux and macOS host layouts.

The layouts are literal paths as the provision record and the systems name them (no Mac runs these tests):
a Linux host (/home, /var/lib/sdenv, no Homebrew), an Apple Silicon Mac (/Users, /var/db/sdenv, /opt/homebrew)
and an Intel Mac (Homebrew's own entries in the shared /usr/local). Symbolic links are judged with recorded
`realpath`/`readlink` answers, and the real file system on Linux.
"""

import os

import pytest
from removal_allowlist import (
    HOME_ROOTS,
    RemovalAllowlist,
    RemovalRefused,
    allowlist_for,
    check_recordable,
    homebrew_links,
    is_system_directory,
)

LINUX = RemovalAllowlist(
    "dummy",
    home="/home/dummy",
    home_roots=HOME_ROOTS["Linux"],
    state_dir="/var/lib/sdenv",
    webui_dir="/srv/sd/stable-diffusion-webui",
)
MAC_ARM = RemovalAllowlist(
    "dummy",
    home="/Users/dummy",
    home_roots=HOME_ROOTS["Darwin"],
    state_dir="/var/db/sdenv",
    webui_dir="/Users/dummy/stable-diffusion-webui",
    homebrew_prefix="/opt/homebrew",
    action="remove-dummy",
)
MAC_INTEL = RemovalAllowlist(
    "dummy",
    home="/Users/dummy",
    home_roots=HOME_ROOTS["Darwin"],
    state_dir="/var/db/sdenv",
    homebrew_prefix="/usr/local",
)
LAYOUTS = {"linux": LINUX, "mac-arm": MAC_ARM, "mac-intel": MAC_INTEL}

ALLOWED = [
    ("linux", "/home/dummy"),
    ("linux", "/home/dummy/.zprofile"),
    ("linux", "/home/dummy/stable-diffusion-webui/venv"),
    ("linux", "/srv/sd/stable-diffusion-webui"),
    ("linux", "/srv/sd/stable-diffusion-webui/models/Lora/glasses-2.safetensors"),
    ("linux", "/var/lib/sdenv/dummy.password"),
    ("linux", "/var/lib/sdenv/models"),
    ("linux", "/var/lib/sdenv/models/stat-cache.json"),
    ("mac-arm", "/Users/dummy"),
    ("mac-arm", "/Users/dummy/Library/Caches/Homebrew"),
    ("mac-arm", "/opt/homebrew"),
    ("mac-arm", "/opt/homebrew/Cellar/python@3.10"),
    ("mac-arm", "/var/db/sdenv/dummy.password"),
    ("mac-arm", "/var/db/sdenv/models"),
    ("mac-intel", "/usr/local/Homebrew"),
    ("mac-intel", "/usr/local/Cellar"),
    ("mac-intel", "/usr/local/Cellar/cmake/3.30.5"),
    ("mac-intel", "/usr/local/Caskroom"),
    ("mac-intel", "/usr/local/Frameworks"),
    ("mac-intel", "/usr/local/var/homebrew"),
    ("mac-intel", "/usr/local/bin/brew"),
]

REFUSED = [
    # What issue 12 names: a record must not be able to delete these.
    ("linux", "/etc", "system directory"),
    ("linux", "/etc/ssh", "outside what reset-dummy may delete"),
    ("linux", "/var/lib/dpkg", "outside what reset-dummy may delete"),
    ("linux", "/root/.ssh", "outside what reset-dummy may delete"),
    ("linux", "/boot/grub", "outside what reset-dummy may delete"),
    ("linux", "/home/alice", "outside what reset-dummy may delete"),
    ("linux", "/home/dummy2", "outside what reset-dummy may delete"),  # a prefix of the name is not the home
    ("linux", "/home", "system directory"),
    ("linux", "/", "system directory"),
    ("linux", "/var/lib/sdenv", "outside what reset-dummy may delete"),  # the state directory itself
    ("linux", "/var/lib/sdenv/state.json", "outside what reset-dummy may delete"),  # the record itself
    ("linux", "/var/lib/sdenv/model-bundle", "outside what reset-dummy may delete"),  # kept across resets
    ("linux", "/var/lib/sdenv/snapshots", "outside what reset-dummy may delete"),
    ("linux", "/var/lib/sdenv/alice.password", "outside what reset-dummy may delete"),
    ("linux", "/srv/sd", "outside what reset-dummy may delete"),  # the WebUI tree's parent
    ("linux", "/opt/homebrew", "outside what reset-dummy may delete"),  # no Homebrew in this record
    ("linux", "relative/path", "not an absolute path"),
    ("linux", "/home/dummy/../alice", "not in normal form"),
    ("linux", "/home/dummy//x", "not in normal form"),
    ("mac-arm", "/Users/alice/Documents", "outside what remove-dummy may delete"),
    ("mac-arm", "/Users/Shared", "system directory"),
    ("mac-arm", "/Library/LaunchDaemons", "system directory"),
    ("mac-arm", "/Library/LaunchDaemons/com.example.plist", "outside what remove-dummy may delete"),
    ("mac-arm", "/Library", "system directory"),
    ("mac-arm", "/Applications/Safari.app", "outside what remove-dummy may delete"),
    (
        "mac-arm",
        "/usr/local/Homebrew",
        "outside what remove-dummy may delete",
    ),  # the ARM record's prefix only
    ("mac-arm", "/opt/homebrew-other", "outside what remove-dummy may delete"),
    ("mac-arm", "/opt", "system directory"),
    ("mac-arm", "/private/var/db/sdenv", "outside what remove-dummy may delete"),
    ("mac-arm", "/var/root", "system directory"),
    ("mac-intel", "/usr/local", "system directory"),
    ("mac-intel", "/usr/local/bin", "system directory"),
    ("mac-intel", "/usr/local/bin/python3", "outside what reset-dummy may delete"),  # not brew's, no target
    ("mac-intel", "/usr/local/share/man", "outside what reset-dummy may delete"),
    ("mac-intel", "/usr/local/lib/libfoo.dylib", "outside what reset-dummy may delete"),
    ("mac-intel", "/usr/local/var/mysql", "outside what reset-dummy may delete"),
    ("mac-intel", "/opt/homebrew", "outside what reset-dummy may delete"),
]


def test_the_tables_cover_enough_paths_each_way():
    assert len(ALLOWED) >= 15 and len(REFUSED) >= 15
    for layout in LAYOUTS:
        assert any(name == layout for name, _ in ALLOWED), layout
        assert any(name == layout for name, _, _ in REFUSED), layout


@pytest.mark.parametrize(("layout", "path"), ALLOWED)
def test_allowed(layout, path):
    assert LAYOUTS[layout].refusal(path) is None


@pytest.mark.parametrize(("layout", "path", "words"), REFUSED)
def test_refused(layout, path, words):
    reason = LAYOUTS[layout].refusal(path)
    assert reason is not None and words in reason, reason


def test_a_refusal_names_the_places_that_are_allowed():
    reason = LINUX.refusal("/etc/passwd.d")
    assert reason == (
        "it is outside what reset-dummy may delete for dummy (its home /home/dummy, its WebUI tree"
        " /srv/sd/stable-diffusion-webui, its entries in /var/lib/sdenv)"
    )
    assert "the Homebrew prefix the toolkit installed /opt/homebrew" in MAC_ARM.refusal("/etc/x")
    assert "Homebrew's own entries in /usr/local" in MAC_INTEL.refusal("/usr/local/include/zlib.h")


def test_system_directories_and_their_parents():
    for path in ["/usr", "/usr/local", "/var/lib", "/private/var/db", "/top", "/System"]:
        assert is_system_directory(path), path
    assert is_system_directory("/private")  # holds /private/var
    for path in ["/opt/homebrew", "/var/lib/sdenv", "/home/dummy", "/srv/sd"]:
        assert not is_system_directory(path), path


# --- Roots the record names that cannot be roots -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"home": "/srv/dummy"}, "is not /home/dummy"),
        ({"home": "/home/other"}, "is not /home/dummy"),
        ({"home": "/"}, "is not /home/dummy"),
        ({"webui_dir": "/home/alice/sd"}, "inside another account's home"),
        ({"webui_dir": "/usr"}, "system directory"),
        ({"webui_dir": "/var/lib"}, "system directory"),
        # Issue 19: what the preflight would never accept as a WebUI directory is no WebUI tree to delete.
        ({"webui_dir": "/etc/sdt-webui"}, "outside /etc, which belongs to the system"),
        ({"webui_dir": "/root/.ssh"}, "outside /root, which belongs to the system"),
        ({"webui_dir": "/var/lib/dpkg"}, "outside /var/lib/dpkg, which belongs to the system"),
        ({"webui_dir": "/var/lib/postgresql"}, "outside /var/lib, which belongs to the system"),
        ({"webui_dir": "/usr/lib/python3"}, "outside /usr, which belongs to the system"),
        ({"webui_dir": "/boot/grub"}, "outside /boot, which belongs to the system"),
        ({"webui_dir": "/var/root/sd"}, "outside /var/root, which belongs to the system"),
        ({"webui_dir": "/private/var/root/sd"}, "outside /var/root, which belongs to the system"),
        ({"webui_dir": "/private/etc/ssh"}, "outside /etc, which belongs to the system"),
        ({"webui_dir": "/private/preboot/x"}, "outside /private, which belongs to the system"),
        ({"webui_dir": "/Library/Application Support/sd"}, "outside /Library, which belongs to the system"),
        ({"webui_dir": "/System/Volumes/Data/sd"}, "outside /System, which belongs to the system"),
        ({"webui_dir": "/opt/homebrew/sd"}, "outside /opt/homebrew, which belongs to the system"),
        ({"homebrew_prefix": "/opt/local"}, "not /opt/homebrew or /usr/local"),
        ({"homebrew_prefix": "/"}, "not /opt/homebrew or /usr/local"),
    ],
)
def test_a_record_cannot_make_a_root_of_what_is_not_one(kwargs, words):
    args = {"home": "/home/dummy", "home_roots": ("/home",), "state_dir": "/var/lib/sdenv", **kwargs}
    allowlist = RemovalAllowlist("dummy", **args)
    assert any(words in clause for clause in allowlist.unusable.values()), allowlist.unusable
    for root, _ in allowlist.trees:
        assert root not in kwargs.values(), root
    for value in kwargs.values():
        reason = allowlist.refusal(value)
        assert reason is not None
        if value != "/" and not is_system_directory(value):  # the refusal says why that root is not one
            assert words in reason, reason


# The preflight's rule for the WebUI directory, with the accounts of a Linux host (people, root, a daemon).
HOST_ACCOUNTS = [
    {"name": "root", "uid": 0, "home": "/root"},
    {"name": "www-data", "uid": 33, "home": "/var/www"},
    {"name": "alice", "uid": 1000, "home": "/home/alice"},
    {"name": "bob", "uid": 1001, "home": "/srv/bob"},
    {"name": "dummy", "uid": 1002, "home": "/home/dummy"},
]
WEBUI_PLACES = [
    "/etc/sdt-webui", "/root/.ssh", "/var/lib/dpkg", "/usr/lib/python3", "/boot/grub", "/var/lib/sd",
    "/srv/bob/sd", "/var/www", "/home/alice/sd", "/Library/sd", "/private/etc/sd", "/usr/local/sd",
    "/srv/sd/stable-diffusion-webui", "/opt/sd", "/home/dummy/stable-diffusion-webui", "/tmp/sdt/webui",
    "/var/tmp/sd", "/data/sd",
]  # fmt: skip


@pytest.mark.parametrize("webui", WEBUI_PLACES)
def test_a_webui_tree_is_deletable_exactly_where_the_preflight_accepts_the_webui_directory(webui):
    import sdenv_preflight as engine
    import sdenv_preflight_rules as rules

    ctx = engine.Context(
        {"sdenv_user_name": "dummy"}, {"accounts": HOST_ACCOUNTS}, rules.SYSTEM_PATHS, options={}
    )
    preflight = rules.RULES["sdenv_webui_dir"].reason(webui, ctx)
    allowlist = RemovalAllowlist(
        "dummy", "/home/dummy", ("/home",), "/var/lib/sdenv", webui_dir=webui, accounts=HOST_ACCOUNTS
    )
    reason = allowlist.refusal(webui + "/x")
    assert (reason is None) == (preflight is None), (reason, preflight)
    if preflight is not None:
        assert preflight in reason, reason  # the same words as the preflight's
        assert reason.count(".") <= 1 and "\n" not in reason  # one clause, for one sentence


def test_a_record_naming_a_system_tree_is_refused_in_one_sentence(tmp_path):
    import reset_guard

    record = tmp_path / "state" / "state.json"
    record.parent.mkdir()
    entry = {
        "uid": 1002, "home": "/home/sdt-nobody", "created_by_toolkit": True,
        "components": {"webui": {"path": "/etc/sdt-webui"}},
        "created_paths": [str(tmp_path / "state" / "models"), "/etc/sdt-webui"],
    }  # fmt: skip
    _, refusals, _ = reset_guard.deletion_plan(
        "sdt-nobody", "reset", None, entry, ("/home",), str(record), accounts=HOST_ACCOUNTS
    )
    assert refusals == [
        "Refusing to delete /etc/sdt-webui (the provision record lists it for sdt-nobody): it is outside what"
        " reset-dummy may delete for sdt-nobody (the WebUI tree /etc/sdt-webui the record names cannot be"
        " deleted: the preflight expects a path of its own outside /etc, which belongs to the system)."
    ]


def test_a_webui_tree_reached_through_a_link_is_judged_where_it_resolves():
    allowlist = RemovalAllowlist(
        "dummy", "/home/dummy", ("/home",), "/var/lib/sdenv", webui_dir="/srv/x/link/webui"
    )
    assert allowlist.refusal("/srv/x/link/webui") is None  # as named, it would do
    realpath = recorded_realpath({"/srv/x/link": "/etc"})
    reason = allowlist.live_refusal("/srv/x/link/webui", realpath, no_links)
    assert reason == (
        "it is outside what reset-dummy may delete for dummy (/srv/x/link/webui the record names is"
        " /etc/webui on this host, and the preflight expects a path of its own outside /etc, which belongs"
        " to the system)"
    )
    assert allowlist.live_refusal("/srv/x/link/webui/models", realpath, no_links) is not None
    # Its home is still its home.
    assert allowlist.live_refusal("/home/dummy/x", realpath, no_links) is None


@pytest.mark.parametrize("state_dir", ["/etc/sdenv", "/usr/lib/sdenv", "/var/lib/dpkg/sdenv", "/boot/sdenv"])
def test_a_state_directory_the_preflight_refuses_gives_no_entries(state_dir):
    allowlist = RemovalAllowlist("dummy", "/home/dummy", ("/home",), state_dir=state_dir)
    for entry in ("models", "dummy.password", "uv-cache/dummy"):
        reason = allowlist.refusal(f"{state_dir}/{entry}")
        assert reason is not None and "which belongs to the system" in reason, reason


def test_a_state_directory_reached_through_a_link_is_judged_where_it_resolves():
    allowlist = RemovalAllowlist("dummy", "/home/dummy", ("/home",), state_dir="/tmp/x/link/state")
    realpath = recorded_realpath({"/tmp/x/link": "/etc"})
    reason = allowlist.live_refusal("/tmp/x/link/state/models", realpath, no_links)
    assert reason is not None and "is /etc/state on this host" in reason, reason
    assert allowlist.live_refusal("/tmp/x/link/state/models", recorded_realpath({}), no_links) is None


def test_a_state_directory_that_is_a_system_directory_gives_no_entries():
    allowlist = RemovalAllowlist("dummy", "/home/dummy", ("/home",), state_dir="/var/lib")
    assert allowlist.refusal("/var/lib/models") is not None
    assert allowlist.refusal("/var/lib/dummy.password") is not None


def test_from_a_recorded_entry():
    entry = {
        "uid": 501,
        "home": "/Users/dummy",
        "created_by_toolkit": True,
        "components": {
            "homebrew": {"prefix": "/opt/homebrew", "installed_by_toolkit": True},
            "webui": {"path": "/Users/dummy/stable-diffusion-webui"},
        },
        "created_paths": ["/opt/homebrew"],
    }
    allowlist = allowlist_for("dummy", entry, entry["home"], HOME_ROOTS["Darwin"], "/var/db/sdenv")
    assert allowlist.refusal("/opt/homebrew") is None
    # A Homebrew the user had before the toolkit is never the toolkit's to delete.
    entry["components"]["homebrew"]["installed_by_toolkit"] = False
    allowlist = allowlist_for("dummy", entry, entry["home"], HOME_ROOTS["Darwin"], "/var/db/sdenv")
    assert "outside what reset-dummy may delete" in allowlist.refusal("/opt/homebrew")
    # No entry at all: only the home and the state directory's entries.
    allowlist = allowlist_for("dummy", None, "/home/dummy", HOME_ROOTS["Linux"], "/var/lib/sdenv")
    assert [root for root, _ in allowlist.trees] == [
        "/home/dummy",
        "/var/lib/sdenv/dummy.password",
        "/var/lib/sdenv/uv-cache/dummy",
        "/var/lib/sdenv/models",
    ]


def test_check_recordable_keeps_system_directories_out_of_any_record():
    assert check_recordable("/opt/homebrew") == "/opt/homebrew"
    for path in ["/usr/local", "/", "/etc", "relative", "/opt/../etc"]:
        with pytest.raises(RemovalRefused):
            check_recordable(path)


# --- Symbolic links: recorded answers (macOS) and the real file system (Linux) -----------------------


def recorded_realpath(mapping):
    """realpath() of a host whose links are `mapping` (link directory -> where it points)."""

    def realpath(path):
        for link, target in sorted(mapping.items(), key=lambda item: -len(item[0])):
            if path == link or path.startswith(link + "/"):
                return target + path[len(link) :]
        return path

    return realpath


def no_links(path):
    raise OSError(22, "Invalid argument", path)


MACOS_SYSTEM_LINKS = {"/var": "/private/var", "/etc": "/private/etc", "/tmp": "/private/tmp"}


def test_macos_var_resolving_to_private_var_still_matches_the_state_directory():
    realpath = recorded_realpath(MACOS_SYSTEM_LINKS)
    assert MAC_ARM.live_refusal("/var/db/sdenv/models", realpath, no_links) is None
    assert MAC_ARM.live_refusal("/var/db/sdenv/dummy.password", realpath, no_links) is None


def test_a_parent_that_links_elsewhere_does_not_carry_a_deletion_out():
    # The dummy made ~/stable-diffusion-webui/models a link to /etc: "models/passwd" is /etc/passwd.
    realpath = recorded_realpath({"/Users/dummy/stable-diffusion-webui/models": "/private/etc"})
    reason = MAC_ARM.live_refusal("/Users/dummy/stable-diffusion-webui/models/passwd", realpath, no_links)
    assert reason and "a symbolic link on the way makes it /private/etc/passwd" in reason
    # The link itself may go (it is deleted, never followed).
    assert MAC_ARM.live_refusal("/Users/dummy/stable-diffusion-webui/models", realpath, no_links) is None


def test_a_root_that_is_itself_a_link_covers_the_link_not_its_target():
    allowlist = RemovalAllowlist("dummy", "/home/dummy", ("/home",), "/var/lib/sdenv", webui_dir="/srv/sd")
    realpath = recorded_realpath({"/srv/sd": "/etc"})
    assert allowlist.live_refusal("/srv/sd", realpath, no_links) is None
    assert "a symbolic link on the way" in allowlist.live_refusal("/srv/sd/ssh", realpath, no_links)


def test_real_links_on_this_file_system(tmp_path):
    home_root, outside = tmp_path / "home", tmp_path / "outside"
    (home_root / "dummy").mkdir(parents=True)
    (outside / "keep").mkdir(parents=True)
    (home_root / "dummy" / "escape").symlink_to(outside)
    allowlist = RemovalAllowlist(
        "dummy", str(home_root / "dummy"), (str(home_root),), str(tmp_path / "state")
    )
    assert allowlist.live_refusal(str(home_root / "dummy" / "escape")) is None
    reason = allowlist.live_refusal(str(home_root / "dummy" / "escape" / "keep"))
    assert reason and str(outside / "keep") in reason


# --- Intel: the links brew made into its own trees ----------------------------------------------------

# A recorded /usr/local of an Intel Mac after `brew install cmake wget` (links as brew makes them), next to
# software that is not Homebrew's.
USR_LOCAL_WALK = {
    "/usr/local/bin": [
        ("/usr/local/bin", [], ["brew", "cmake", "wget", "python3", "docker"]),
    ],
    "/usr/local/share": [
        ("/usr/local/share", ["zsh", "man"], []),
        ("/usr/local/share/zsh", ["site-functions"], []),
        ("/usr/local/share/zsh/site-functions", [], ["_brew", "_docker"]),
        ("/usr/local/share/man", ["man1"], []),
        ("/usr/local/share/man/man1", [], ["cmake.1", "brew.1"]),
    ],
    "/usr/local/opt": [("/usr/local/opt", ["cmake", "openssl"], [])],
}
USR_LOCAL_LINKS = {
    "/usr/local/bin/brew": "../Homebrew/bin/brew",
    "/usr/local/bin/cmake": "../Cellar/cmake/3.30.5/bin/cmake",
    "/usr/local/bin/wget": "../Cellar/wget/1.24.5/bin/wget",
    "/usr/local/bin/python3": "/Library/Frameworks/Python.framework/Versions/3.12/bin/python3",
    "/usr/local/bin/docker": "/Applications/Docker.app/Contents/Resources/bin/docker",
    "/usr/local/share/zsh/site-functions/_brew": "../../../Homebrew/completions/zsh/_brew",
    "/usr/local/share/zsh/site-functions/_docker": "/Applications/Docker.app/Contents/Resources/etc/_docker",
    "/usr/local/share/man/man1/cmake.1": "../../../Cellar/cmake/3.30.5/share/man/man1/cmake.1",
    "/usr/local/share/man/man1/brew.1": "../../../Homebrew/manpages/brew.1",
    "/usr/local/opt/cmake": "../Cellar/cmake/3.30.5",
    "/usr/local/opt/openssl": "/opt/local/openssl",
}


def recorded_walk(top):
    return iter(USR_LOCAL_WALK.get(top, []))


def recorded_readlink(path):
    if path in USR_LOCAL_LINKS:
        return USR_LOCAL_LINKS[path]
    raise OSError(22, "Invalid argument", path)


def test_intel_links_into_homebrews_trees_go_and_nothing_else():
    links = homebrew_links(MAC_INTEL, walk=recorded_walk, readlink=recorded_readlink)
    assert sorted(links) == [
        "/usr/local/bin/cmake",
        "/usr/local/bin/wget",
        "/usr/local/opt/cmake",
        "/usr/local/share/man/man1/brew.1",
        "/usr/local/share/man/man1/cmake.1",
        "/usr/local/share/zsh/site-functions/_brew",
    ]
    # bin/brew is one of Homebrew's own entries (a tree root), not a link found by the walk.
    assert "/usr/local/bin/brew" not in links
    for other in ["/usr/local/bin/python3", "/usr/local/bin/docker", "/usr/local/opt/openssl"]:
        assert other not in links
        assert MAC_INTEL.refusal(other, USR_LOCAL_LINKS[other]) is not None


def test_links_are_looked_for_only_when_the_toolkit_installed_homebrew_in_usr_local():
    assert homebrew_links(MAC_ARM, walk=recorded_walk, readlink=recorded_readlink) == {}
    assert homebrew_links(LINUX, walk=recorded_walk, readlink=recorded_readlink) == {}


def test_a_link_outside_brews_link_directories_is_refused_whatever_it_points_to():
    assert MAC_INTEL.refusal("/usr/local/mystuff/cmake", "../Cellar/cmake/3.30.5/bin/cmake") is not None
    assert MAC_INTEL.refusal("/usr/local/bin/cmake", "../Cellar/cmake/3.30.5/bin/cmake") is None


def test_home_roots_per_platform_are_the_systems_defaults():
    assert HOME_ROOTS == {"Linux": ("/home",), "Darwin": ("/Users",)}
    assert os.path.join(HOME_ROOTS["Darwin"][0], "dummy") == MAC_ARM.home


def test_a_model_store_the_record_names_is_deletable_where_the_preflight_accepts_it():
    """The store outside the home the record names (models.store) goes with the account, like its WebUI
    tree; a store in a system tree or another account's home never does, whatever the record says."""
    entry = {"components": {"models": {"store": "/srv/sd-models", "state_dir": "/var/lib/sdenv/models"}}}
    allowlist = allowlist_for(
        "dummy", entry, "/home/dummy", ("/home",), "/var/lib/sdenv", accounts=HOST_ACCOUNTS
    )
    assert allowlist.refusal("/srv/sd-models/checkpoints/a.safetensors") is None
    assert allowlist.refusal("/srv/other") is not None
    for bad in ("/etc/sd-models", "/home/alice/sd-models"):
        entry = {"components": {"models": {"store": bad}}}
        allowlist = allowlist_for(
            "dummy", entry, "/home/dummy", ("/home",), "/var/lib/sdenv", accounts=HOST_ACCOUNTS
        )
        assert "the model store " + bad + " the record names cannot be deleted" in allowlist.refusal(
            bad + "/x"
        )


def test_another_accounts_removal_keeps_a_store_this_account_uses():
    import reset_guard

    others = {"bob": {"components": {"models": {"store": "/srv/shared-models"}}}}
    assert reset_guard.still_used("/srv/shared-models/checkpoints", others) == "bob"


@pytest.mark.parametrize("comfyui", WEBUI_PLACES)
def test_comfyuis_tree_is_deletable_exactly_where_the_preflight_accepts_sdenv_comfyui_dir(comfyui):
    """ComfyUI's tree the record names (components.comfyui.path) follows the WebUI tree's rule, which is the
    preflight's own for sdenv_comfyui_dir: a system tree, root's or another account's home never."""
    import sdenv_preflight as engine
    import sdenv_preflight_rules as rules

    ctx = engine.Context(
        {"sdenv_user_name": "dummy"}, {"accounts": HOST_ACCOUNTS}, rules.SYSTEM_PATHS, options={}
    )
    preflight = rules.RULES["sdenv_comfyui_dir"].reason(comfyui, ctx)
    entry = {"components": {"comfyui": {"path": comfyui}}}
    allowlist = allowlist_for(
        "dummy", entry, "/home/dummy", ("/home",), "/var/lib/sdenv", accounts=HOST_ACCOUNTS
    )
    reason = allowlist.refusal(comfyui + "/main.py")
    assert (reason is None) == (preflight is None), (reason, preflight)
    if preflight is not None:
        assert f"the ComfyUI tree {comfyui} the record names cannot be deleted" in reason, reason
        assert preflight in reason and "\n" not in reason


@pytest.mark.parametrize("comfyui", ["/", "/usr", "/etc", "/home", "/var/lib"])
def test_a_comfyui_tree_recorded_as_a_system_directory_is_never_a_root(comfyui):
    entry = {"components": {"comfyui": {"path": comfyui}}}
    allowlist = allowlist_for(
        "dummy", entry, "/home/dummy", ("/home",), "/var/lib/sdenv", accounts=HOST_ACCOUNTS
    )
    assert all(what != "its ComfyUI tree" for _, what in allowlist.trees)
    assert allowlist.refusal(comfyui) is not None
    assert allowlist.refusal(comfyui.rstrip("/") + "/sdt-file") is not None


def test_another_accounts_removal_keeps_a_comfyui_tree_this_account_uses():
    import reset_guard

    others = {"bob": {"components": {"comfyui": {"path": "/srv/ComfyUI"}}}}
    assert reset_guard.still_used("/srv/ComfyUI", others) == "bob"
    assert "/srv/ComfyUI" in reset_guard.used_paths(others["bob"])
