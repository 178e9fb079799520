"""Account command lines and output parsing. The macOS outputs below are recorded from the documented
behaviour of dscl/dseditgroup/stat (fakes: no Mac runs these tests); Linux ones are real formats."""

import pytest
from dummy_accounts import (
    AccountError,
    DarwinAccounts,
    LinuxAccounts,
    check_password,
    generate_password,
    parse_checkmember,
    parse_console_owner,
    parse_dscl_read,
    parse_getent_passwd,
    parse_login_defs_uid_min,
    parse_useradd_home,
    parse_who_console,
    record_names,
    system_account_reason,
    takeover_changes,
    takeover_refusal,
)

# Recorded macOS outputs (labelled fakes: shapes as dscl and dseditgroup print them).
DSCL_READ_DUMMY = """NFSHomeDirectory: /Users/dummy
PrimaryGroupID: 20
RealName:
 Dummy User
UniqueID: 502
UserShell: /bin/zsh
"""
DSCL_NOT_FOUND_STDERR = "<dscl_cmd> DS Error: -14136 (eDSRecordNotFound)\n"
CHECKMEMBER_YES = "yes dummy is a member of admin\n"
CHECKMEMBER_NO = "no dummy is NOT a member of admin\n"


class Recorder:
    """Stands in for run_command: answers from a table keyed by argv prefix, records every call."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append((list(argv), data))
        for prefix, answer in self.answers:
            if list(argv[: len(prefix)]) == prefix:
                return answer
        return (0, "", "")


def test_parse_dscl_read_joins_continuation_lines():
    values = parse_dscl_read(DSCL_READ_DUMMY)
    assert values == {
        "NFSHomeDirectory": "/Users/dummy",
        "PrimaryGroupID": "20",
        "RealName": "Dummy User",
        "UniqueID": "502",
        "UserShell": "/bin/zsh",
    }


def test_parse_checkmember():
    assert parse_checkmember(CHECKMEMBER_YES) is True
    assert parse_checkmember(CHECKMEMBER_NO) is False


def test_darwin_get_reads_dscl_and_admin_membership():
    run = Recorder([(["dscl"], (0, DSCL_READ_DUMMY, "")), (["dseditgroup"], (0, CHECKMEMBER_YES, ""))])
    account = DarwinAccounts(run).get("dummy")
    assert account == {
        "name": "dummy",
        "uid": 502,
        "gid": 20,
        "fullname": "Dummy User",
        "home": "/Users/dummy",
        "shell": "/bin/zsh",
        "admin": True,
        "groups": ["admin"],
    }
    assert run.calls[0][0][:4] == ["dscl", ".", "-read", "/Users/dummy"]
    assert run.calls[1][0] == ["dseditgroup", "-o", "checkmember", "-m", "dummy", "admin"]


def test_darwin_get_missing_account():
    run = Recorder([(["dscl"], (56, "", DSCL_NOT_FOUND_STDERR))])
    assert DarwinAccounts(run).get("nobody-here") is None


def test_darwin_create_never_puts_the_password_on_a_command_line():
    accounts = DarwinAccounts(Recorder([]))
    commands = accounts.create_commands("dummy", "Dummy", "/bin/zsh", admin=True)
    assert commands == [
        ["sysadminctl", "-addUser", "dummy", "-fullName", "Dummy", "-shell", "/bin/zsh", "-admin"],
        ["createhomedir", "-c", "-u", "dummy"],
    ]
    argv, data = accounts.password_command("dummy", "s3cret-Pw")
    assert argv == ["dscl", "."] and "s3cret-Pw" not in " ".join(argv)
    assert data == 'passwd /Users/dummy "s3cret-Pw"\n'


def test_darwin_create_fails_loudly_when_sysadminctl_silently_failed():
    # sysadminctl exits 0 on failure; the account must be re-read to know.
    run = Recorder([(["dscl"], (56, "", DSCL_NOT_FOUND_STDERR))])
    with pytest.raises(AccountError, match="does not exist after creating it"):
        DarwinAccounts(run).create("dummy", "Dummy", "/bin/zsh", admin=True)


def test_darwin_modify_commands():
    account = {"name": "dummy", "shell": "/bin/bash", "fullname": "Old", "admin": False}
    assert DarwinAccounts(Recorder([])).modify_commands(account, "Dummy", "/bin/zsh", admin=True) == [
        ["dscl", ".", "-create", "/Users/dummy", "UserShell", "/bin/zsh"],
        ["dscl", ".", "-create", "/Users/dummy", "RealName", "Dummy"],
        ["dseditgroup", "-o", "edit", "-a", "dummy", "-t", "user", "admin"],
    ]


def test_darwin_delete_and_stop():
    accounts = DarwinAccounts(Recorder([]))
    assert accounts.delete_commands("dummy") == [["sysadminctl", "-deleteUser", "dummy"]]
    assert accounts.stop_commands({"uid": 502}) == [
        ["launchctl", "bootout", "user/502"],
        ["pkill", "-KILL", "-U", "502"],
    ]


def test_darwin_console_owner():
    assert parse_console_owner("dummy\n") == {"dummy"}
    assert parse_console_owner("root\n") == set()  # the login window
    run = Recorder([(["stat"], (0, "alice\n", ""))])
    assert DarwinAccounts(run).console_users() == {"alice"}
    assert run.calls[0][0] == ["stat", "-f", "%Su", "/dev/console"]


def test_homes_live_where_each_system_makes_them():
    # The allow-list deletes a home only there (removal_allowlist); see test_removal_allowlist.py.
    assert DarwinAccounts(Recorder([])).home_roots == ("/Users",)
    assert LinuxAccounts(Recorder([])).home_roots == ("/home",)


def test_deleting_an_account_whose_home_is_gone():
    linux = LinuxAccounts(Recorder([]))
    assert linux.delete_commands("dummy") == [["userdel", "--remove", "dummy"]]
    # userdel --remove fails (exit 12) on a missing home: the account still goes.
    assert linux.delete_commands("dummy", remove_home=False) == [["userdel", "dummy"]]
    # sysadminctl deletes the home with the account and does not mind a missing one.
    darwin = DarwinAccounts(Recorder([]))
    assert darwin.delete_commands("dummy", remove_home=False) == [["sysadminctl", "-deleteUser", "dummy"]]


def test_delete_checks_that_the_account_is_gone():
    # sysadminctl exits 0 even when it did nothing: the account is read again afterwards.
    run = Recorder([(["dscl"], (0, DSCL_READ_DUMMY, "")), (["dseditgroup"], (0, CHECKMEMBER_YES, ""))])
    with pytest.raises(AccountError, match="still exists after deleting it"):
        DarwinAccounts(run).delete({"name": "dummy", "uid": 502})
    assert run.calls[0][0] == ["sysadminctl", "-deleteUser", "dummy"]


def test_parse_getent_passwd():
    entry = parse_getent_passwd("dummy:x:1001:1001:Dummy,,,:/home/dummy:/bin/zsh\n")
    assert entry == {
        "name": "dummy",
        "uid": 1001,
        "gid": 1001,
        "fullname": "Dummy",
        "home": "/home/dummy",
        "shell": "/bin/zsh",
    }
    assert parse_getent_passwd("") is None
    with pytest.raises(AccountError):
        parse_getent_passwd("garbage")


def test_linux_commands(tmp_path):
    login_defs = tmp_path / "login.defs"
    login_defs.write_text("# comment\nUID_MIN\t\t\t 2000\nUID_MAX 60000\n")
    run = Recorder(
        [(["getent", "group", "sudo"], (2, "", "")), (["getent", "group", "wheel"], (0, "wheel:x:10:", ""))]
    )
    accounts = LinuxAccounts(run, login_defs=str(login_defs))
    assert accounts.first_regular_uid == 2000
    assert accounts.create_commands("dummy", "Dummy", "/bin/zsh", admin=True) == [
        [
            "useradd",
            "--create-home",
            "--shell",
            "/bin/zsh",
            "--comment",
            "Dummy",
            "--groups",
            "wheel",
            "dummy",
        ]
    ]
    assert accounts.password_command("dummy", "pw") == (["chpasswd"], "dummy:pw\n")


def test_parse_login_defs_default():
    assert parse_login_defs_uid_min("nothing here") == 1000


def test_parse_who_console_ignores_remote_sessions():
    who = (
        "alice    tty1         2026-11-24 09:00\n"
        "bob      pts/0        2026-11-24 09:10 (10.0.0.5)\n"
        "carol    :0           2026-11-24 09:20 (:0)\n"
    )
    assert parse_who_console(who) == {"alice", "carol"}


@pytest.mark.parametrize("bad", ["", "has space", 'quo"te', "back\\slash", "co:lon", "tab\there"])
def test_check_password_refuses_what_cannot_be_passed_safely(bad):
    with pytest.raises(AccountError):
        check_password(bad)


def test_generated_passwords_pass_the_check_and_differ():
    first, second = generate_password(), generate_password()
    check_password(first)
    assert first != second and len(first) >= 20


# --- Taking over an existing account (make provision without ADOPT=yes) ---------------------------------

SOMEONE = {
    "name": "dummy", "uid": 1001, "home": "/home/dummy", "shell": "/bin/bash", "fullname": "Someone Else",
    "groups": ["dummy", "audio"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        (
            {"shell": "/usr/sbin/nologin", "home": "/nonexistent"},
            "its shell /usr/sbin/nologin refuses logins",
        ),
        ({"shell": "/bin/false", "home": "/home/svc"}, "its shell /bin/false refuses logins"),
        ({"shell": "/bin/sh", "home": "/var/lib/svc"}, "its home /var/lib/svc is outside /home"),
        ({"shell": "/bin/sh", "home": "/homework/x"}, "its home /homework/x is outside /home"),
        ({"shell": "/bin/sh", "home": ""}, "its home (none) is outside /home"),
    ],
)
def test_system_accounts_whatever_the_uid(account, reason):
    assert system_account_reason({"uid": 1500, **account}, ("/home",)) == reason


def test_people_live_in_a_home_root_or_where_useradd_puts_homes(tmp_path):
    assert system_account_reason(SOMEONE, ("/home",)) is None
    defaults = tmp_path / "useradd"
    defaults.write_text("# HOME=/old\nSHELL=/bin/sh\nHOME=/srv/people\n")
    accounts = LinuxAccounts(Recorder([]), login_defs="/nonexistent", useradd_defaults=str(defaults))
    assert accounts.people_home_roots == ("/home", "/srv/people")
    assert system_account_reason(dict(SOMEONE, home="/srv/people/bob"), accounts.people_home_roots) is None
    assert parse_useradd_home('HOME="/u"\n') == "/u" and parse_useradd_home("") is None


def test_taking_over_an_account_says_what_would_change():
    changes = takeover_changes(SOMEONE, "Dummy", "/bin/zsh", "sudo")
    assert changes == [
        ("shell", "/bin/bash", "/bin/zsh"),
        ("full name", "'Someone Else'", "'Dummy'"),
        ("groups", "dummy,audio", "dummy,audio,sudo"),
    ]
    sentence = takeover_refusal("dummy", SOMEONE, None, changes, False, "/var/lib/sdenv/state.json")
    assert sentence == (
        "The account dummy already exists (uid 1001) and the provision record /var/lib/sdenv/state.json does not"
        " name it, so provisioning would take it over and change shell /bin/bash → /bin/zsh; full name"
        " 'Someone Else' → 'Dummy'; groups dummy,audio → dummy,audio,sudo: run with ADOPT=yes to adopt it"
        " (reset-dummy and remove-dummy then delete it and its home only with FORCE=yes), or set"
        " sdenv_user_name to a new name."
    )
    same = {**SOMEONE, "shell": "/bin/zsh", "fullname": "Dummy", "groups": ["dummy", "sudo"]}
    assert takeover_changes(same, "Dummy", "/bin/zsh", "sudo") == []
    assert "would take it over and change nothing about it:" in takeover_refusal(
        "dummy", same, None, [], False, "r"
    )


def test_adopt_or_the_records_own_account_is_not_a_takeover():
    changes = takeover_changes(SOMEONE, "Dummy", "/bin/zsh", "sudo")
    assert takeover_refusal("dummy", SOMEONE, None, changes, True, "r") is None
    assert (
        takeover_refusal("dummy", SOMEONE, {"uid": 1001, "created_by_toolkit": True}, changes, False, "r")
        is None
    )
    # An entry whose account was deleted and the name given to someone else is not this account.
    assert not record_names(SOMEONE, {"uid": 1500})
    assert "does not name it" in takeover_refusal("dummy", SOMEONE, {"uid": 1500}, changes, False, "r")
    assert not record_names(SOMEONE, {}) and record_names(SOMEONE, {"home": "/home/dummy"})
