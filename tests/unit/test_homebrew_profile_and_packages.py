"""The login profile's managed block and dpkg status parsing (the dpkg output is this machine's format)."""

import pytest
from login_profile_block import ProfileError, count_lines, render
from system_package_status import (
    PackagesBusy,
    dpkg_query_argv,
    package_status,
    parse_dpkg_query,
    parse_dpkg_states,
)

LINE = 'eval "$(/opt/homebrew/bin/brew shellenv)"'


def test_block_is_appended_once_and_a_second_render_changes_nothing():
    original = "export LANG=ja_JP.UTF-8\n"
    once, left = render(original, "homebrew", [LINE])
    assert left == [] and once.startswith(original) and count_lines(once, LINE) == 1
    assert "\n\n# BEGIN sdenv managed block: homebrew\n" in once  # a blank line, as the guide's `echo;`
    twice, _ = render(once, "homebrew", [LINE])
    assert twice == once


def test_a_line_the_user_wrote_by_hand_is_not_repeated():
    # What the guide's manual step leaves in ~/.zprofile.
    by_hand = "\n" + LINE + "\n"
    text, left = render(by_hand, "homebrew", [LINE])
    assert left == [LINE] and text == by_hand and count_lines(text, LINE) == 1


def test_block_content_is_replaced_in_place_and_surroundings_kept():
    text, _ = render("a\n", "homebrew", ["old"])
    text += "b\n"
    new, _ = render(text, "homebrew", [LINE])
    assert new.startswith("a\n") and new.endswith("b\n") and "old" not in new and count_lines(new, LINE) == 1


def test_empty_profile_gets_only_the_block():
    text, _ = render("", "homebrew", [LINE])
    assert text.splitlines()[0] == "# BEGIN sdenv managed block: homebrew" and text.endswith("\n")


def test_broken_markers_are_refused_with_what_to_do():
    with pytest.raises(ProfileError, match=r"1 begin and 0 end markers.*remove the broken markers"):
        render("# BEGIN sdenv managed block: homebrew\nx\n", "homebrew", [LINE])


# dpkg-query's output on this Debian 12 machine (format DPKG_FORMAT): healthy, removed-with-config.
DPKG_OUTPUT = "cmake\tii \t3.25.1-1\nlibgl1:amd64\tii \t1.6.0-1\nrustc\trc \t1.63.0+dfsg1-2\n"


def test_parse_dpkg_query_keeps_only_installed_packages():
    assert parse_dpkg_query(DPKG_OUTPUT) == {"cmake": "3.25.1-1", "libgl1": "1.6.0-1"}


def test_package_status_treats_unknown_names_as_missing():
    calls = []

    def run(argv):
        calls.append(argv)
        return 1, DPKG_OUTPUT, "dpkg-query: no packages found matching bc\n"

    installed, missing = package_status(run, ["cmake", "rustc", "bc", "libgl1"])
    assert installed == {"cmake": "3.25.1-1", "libgl1": "1.6.0-1"}
    assert missing == ["rustc", "bc"]
    assert calls == [dpkg_query_argv(["cmake", "rustc", "bc", "libgl1"])]


def test_package_status_fails_on_a_broken_dpkg():
    with pytest.raises(OSError, match="exit 2"):
        package_status(lambda argv: (2, "", "dpkg: error: database locked\n"), ["cmake"])


# While another `apt-get install cmake` runs, dpkg-query shows cmake unpacked (iU), then half-configured
# (iF), then installed (ii); un/pn (known, never installed) and rc (config files only) are not installed.
DPKG_DURING_ANOTHER_RUN = (
    "cmake\tiU \t3.25.1-1\nrustc\trc \t1.63.0+dfsg1-2\nbc\tun \t\nlibgl1:amd64\tii \t1.6.0-1\n"
)


def test_a_package_another_run_is_installing_is_neither_installed_nor_missing():
    installed, in_progress = parse_dpkg_states(DPKG_DURING_ANOTHER_RUN)
    assert installed == {"libgl1": "1.6.0-1"} and in_progress == {"cmake": "iU"}


def test_a_package_another_run_is_installing_is_waited_for_not_claimed():
    answers = [DPKG_DURING_ANOTHER_RUN, DPKG_DURING_ANOTHER_RUN.replace("iU", "iF"), DPKG_OUTPUT]
    slept = []

    def run(argv):
        return 1, answers[min(len(slept), len(answers) - 1)], ""

    installed, missing = package_status(
        run, ["cmake", "rustc", "libgl1"], wait_seconds=600, sleep=slept.append
    )
    assert len(slept) == 2, "it polled until the other run was done"
    # Installed by the other run: not missing, so never installed (nor recorded) as the toolkit's.
    assert installed == {"cmake": "3.25.1-1", "libgl1": "1.6.0-1"} and missing == ["rustc"]


def test_a_package_left_half_done_stops_the_run_after_the_wait_in_one_sentence():
    slept = []
    with pytest.raises(PackagesBusy) as refused:
        package_status(
            lambda argv: (0, DPKG_DURING_ANOTHER_RUN.replace("iU", "iF"), ""),
            ["cmake", "libgl1"],
            wait_seconds=6,
            poll_seconds=2,
            sleep=slept.append,
        )
    assert slept == [2, 2, 2]
    message = str(refused.value)
    assert message.startswith("The packages cmake (iF) are being installed by another dpkg/apt run")
    assert "dpkg --configure -a" in message and message.count(". ") == 0
