"""scripts/inventory_check.py: one sentence for a missing, unparsable or empty inventory and an unmatched LIMIT,
with Ansible's own parser (the make runs are in tests/integration/test_preflight.py)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
spec = importlib.util.spec_from_file_location("inventory_check", ROOT / "scripts" / "inventory_check.py")
inventory_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inventory_check)

FLEET = str(ROOT / "inventory" / "examples" / "fleet.yml")
LOCAL = str(ROOT / "inventory" / "localhost.yml")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("all: [\n", "cannot be read: YAML parsing failed"),
        (
            "- localhost\n",
            "cannot be read: YAML inventory has invalid structure, it should be a dictionary, got: a list",
        ),
        ("all:\n  hosts: {}\n", "lists no host"),
        ("", "lists no host"),
    ],
)
def test_inventories_that_give_no_host(tmp_path, content, words):
    path = tmp_path / "hosts.yml"
    path.write_text(content)
    sentence = inventory_check.problem(str(path), "")
    assert sentence.startswith(f"The inventory {path} (INVENTORY=)") and words in sentence, sentence
    assert sentence.count(". ") == 0 and sentence.endswith(").")  # one sentence


def test_the_line_of_a_yaml_error_is_named(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    a: {\n")
    assert "(line 4)" in inventory_check.problem(str(path), "")


def test_a_missing_inventory_needs_no_ansible(tmp_path):
    missing = tmp_path / "nope.yml"
    assert inventory_check.early_problem(str(missing)) == (
        f"The inventory {missing} (INVENTORY=) does not exist: give an existing file (inventory/localhost.yml is"
        " this machine; inventory/examples/fleet.yml shows several)."
    )
    assert inventory_check.early_problem("  ").startswith("INVENTORY is empty")


def test_a_directory_names_the_file_that_fails(tmp_path):
    (tmp_path / "good.yml").write_text("all:\n  hosts:\n    a:\n")
    (tmp_path / "bad.yml").write_text("all: [\n")
    assert f"The inventory {tmp_path / 'bad.yml'} (INVENTORY=) cannot be read" in inventory_check.problem(
        str(tmp_path), ""
    )


@pytest.mark.parametrize(
    ("inventory", "limit", "words"),
    [
        (LOCAL, "nohost", "LIMIT=nohost names nohost, which matches no host"),
        (LOCAL, "localhost,nohost", "names nohost"),
        (FLEET, "localhost", "names localhost, which matches no host"),  # only the implicit localhost
        (FLEET, "studio-*:!studio-*", "LIMIT=studio-*:!studio-* leaves no host"),
        (FLEET, "macs:&nothere", "names nothere"),
    ],
)
def test_a_limit_that_matches_nothing(inventory, limit, words):
    sentence = inventory_check.problem(inventory, limit)
    assert words in sentence, sentence


@pytest.mark.parametrize(
    ("inventory", "limit"),
    [(LOCAL, ""), (LOCAL, "localhost"), (FLEET, "studio-*"), (FLEET, "macs:!studio-1.local")],
)
def test_good_inventories_and_limits_pass(inventory, limit):
    assert inventory_check.problem(inventory, limit) is None


# ARGS reaches ansible-playbook through the environment, split here without a shell; what would run a
# playbook without its preflight (the task tagged `always`) is refused with one sentence.
@pytest.mark.parametrize(
    ("args", "words"),
    [
        ("--skip-tags always", "skips the tag always, which carries the preflight"),
        ("--skip-tags=models,always", "skips the tag always"),
        ("--skip-t all", "skips the tag all"),
        ("--start-at-task 'Install the WebUI'", "gives --start-at-task, which starts after the preflight"),
        ("--start-at=x", "gives --start-at=x, which starts after the preflight"),
        ("--step", "gives --step, which lets the preflight be answered away"),
        ("-e 'x=1", "cannot be split into arguments (No closing quotation): balance its quotes."),
    ],
)
def test_args_that_skip_the_preflight_are_refused(args, words):
    extra, sentence = inventory_check.make_args({"SDENV_VAR_ARGS": args})
    assert extra is None
    assert sentence.startswith(f"ARGS={args} ") and words in sentence


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"SDENV_VAR_SERIAL": "abc"}, "SERIAL=abc is not a host count or percent"),
        ({"SDENV_VAR_SERIAL": "0"}, "SERIAL=0 is not a host count or percent"),
        ({"SDENV_VAR_SERIAL": "150%"}, "SERIAL=150% is not a host count or percent"),
        ({"SDENV_VAR_MAX_FAIL": "101"}, "MAX_FAIL=101 is not a percent: give a whole number from 0 to 100"),
        ({"SDENV_VAR_MAX_FAIL": "20%"}, "MAX_FAIL=20% is not a percent"),
    ],
)
def test_fleet_values_ansible_would_stop_on_with_a_traceback_are_refused_first(variables, words):
    extra, sentence = inventory_check.make_args({"SDENV_VAR_ARGS": "", **variables})
    assert extra is None and sentence.startswith(words), sentence


def test_fleet_values_ansible_takes_pass():
    for variables in ({"SDENV_VAR_SERIAL": "2"}, {"SDENV_VAR_SERIAL": "25%"}, {"SDENV_VAR_MAX_FAIL": "0"},
                      {"SDENV_VAR_MAX_FAIL": "100", "SDENV_VAR_SERIAL": ""}):  # fmt: skip
        assert inventory_check.make_args({"SDENV_VAR_ARGS": "", **variables}) == ([], None)


def test_args_are_split_like_a_shell_but_never_run_by_one(tmp_path):
    args, sentence = inventory_check.make_args(
        {
            "SDENV_VAR_ARGS": "--tags dummy_user -e \"sdenv_user_fullname='A B'\" -e x=$(touch_marker)",
            "SDENV_E_sdenv_run_spec": "/tmp/a b'c",
            "SDENV_EPATH_sdenv_bundle_out": "out dir",
            "SDENV_EPATH_sdenv_bundle": "",
        }
    )
    assert sentence is None
    assert args[:6] == ["--tags", "dummy_user", "-e", "sdenv_user_fullname='A B'", "-e", "x=$(touch_marker)"]
    assert args[6] == "-e"
    assert json.loads(args[7]) == {
        "sdenv_run_spec": "/tmp/a b'c",
        "sdenv_bundle_out": os.path.abspath("out dir"),
    }


# Ansible reads settings.yml and lock.yml (group_vars next to the inventory) only when a play starts, and
# then prints the parser's words alone: this names the file and the line, before anything runs.
@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        (
            "settings.yml",
            "sdenv_user_name: dummy\nsdenv_user_fullname: [Dummy\nsdenv_user_shell: /bin/zsh\n",
            "settings.yml line 3 cannot be read as YAML: did not find expected ',' or ']' (while parsing a flow"
            " sequence, begun on line 2); fix it, then run again.",
        ),
        (
            "lock.yml",
            "sdenv_lock:\n  webui: 1\n    commit: 2\n",
            "lock.yml line 3 cannot be read as YAML: mapping values are not allowed in this context; fix it",
        ),
    ],
)
def test_a_yaml_error_in_the_settings_or_lock_names_its_file_and_line(tmp_path, name, text, words):
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "ok.yml").write_text("a: 1\n")
    (tmp_path / "group_vars" / "all" / name).write_text(text)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n")
    sentence = inventory_check.problem(str(inventory), "")
    assert sentence.startswith(str(tmp_path / "group_vars" / "all" / name)) and words in sentence, sentence
    (tmp_path / "group_vars" / "all" / name).write_text("a: 1\n")
    assert inventory_check.problem(str(inventory), "") is None


@pytest.mark.parametrize(
    ("hosts", "args", "expected"),
    [
        (4, [], ["--forks", "5"]),  # never fewer than Ansible's own default
        (12, ["--tags", "webui"], ["--forks", "12"]),  # every host of the fleet at once, not 10 and then 2
        (63, ["-v"], ["--forks", "63"]),
        (12, ["--forks", "3"], []),  # ARGS gives its own: it wins
        (12, ["--forks=30"], []),
        (12, ["-f", "30"], []),
        (12, ["-f30"], []),
        (12, ["--fork=30"], []),  # argparse takes an unambiguous prefix
        (12, ["--flush-cache"], ["--forks", "12"]),
    ],
)
def test_forks_follow_the_host_count_unless_args_give_them(hosts, args, expected):
    assert inventory_check.forks_args(hosts, args) == expected


def test_the_playbook_gets_forks_for_the_hosts_limit_leaves(tmp_path, monkeypatch):
    hosts = {f"h{n}": {"ansible_connection": "local"} for n in range(12)}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    from ansible.cli.playbook import PlaybookCLI

    seen = []
    monkeypatch.setattr(PlaybookCLI, "cli_executor", staticmethod(lambda command: seen.append(command) or 0))
    monkeypatch.setattr(inventory_check.sys, "argv", list(inventory_check.sys.argv))
    playbook = [".venv/bin/ansible-playbook", "-i", str(inventory), "site.yml"]
    assert inventory_check.main([str(inventory), "", "--", *playbook]) == 0
    assert inventory_check.main([str(inventory), "h1:h2", "--", *playbook]) == 0
    assert inventory_check.main([str(inventory), "", "--", *playbook[:1], "--forks=2", *playbook[1:]]) == 0
    assert seen == [
        [playbook[0], "--forks", "12", *playbook[1:]],
        [playbook[0], "--forks", "5", *playbook[1:]],
        [playbook[0], "--forks=2", *playbook[1:]],
    ]
