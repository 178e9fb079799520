"""Bad input through the real make targets: exit != 0, one sentence naming the setting, where it was set,
the value and what is expected, and nothing changed on the host.

Each case is a real `make TARGET` against this machine (test inventory, throwaway user, the test's own state
directory). "Nothing changed" is checked where a run that got past the preflight would change something
first: no account or group of the throwaway name (passwd, group, shadow, gshadow), no home, no state
directory, /var/lib/sdenv as it was, and apt: the dummy's shell is set to mksh, which this machine does not
have, so role dummy_user's first task would install it (an entry in apt's history, a dpkg status) if the
preflight let the run through. Only the runs' own traces are looked at: other tests on this machine may
add accounts and packages of their own at the same time.
"""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from sdenv_testlib import ROOT, MakeResult, make_argv

MARKER_SHELL = "/bin/mksh"
MARKER_PACKAGE = "mksh"
APT_HISTORY = Path("/var/log/apt/history.log")
REAL_STATE = Path("/var/lib/sdenv")
HEX = "ab" * 32


def installed(package):
    done = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${db:Status-Abbrev}", package], capture_output=True, text=True
    )
    return done.returncode == 0 and done.stdout.startswith("ii")


def listing(path):
    if not path.exists():
        return None
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*"))


def lines_naming(user, path):
    with open(path, encoding="utf-8") as handle:
        return [line for line in handle if line.split(":", 1)[0] == user]


@pytest.fixture(scope="module")
def apt_before():
    if installed(MARKER_PACKAGE):
        pytest.skip(f"{MARKER_PACKAGE} is installed here, so it cannot show that apt was not run")
    return APT_HISTORY.stat().st_size if APT_HISTORY.exists() else 0


def inventory_for(test_inventory, edits=(), **host_vars):
    """A test inventory with its own copy of the repository's group_vars (glasses-2 pinned, so only the
    case's own bad value is wrong, unless an edit names glasses-2's line), `edits` applied to those files:
    [(file, old, new)]."""
    inventory = test_inventory(sdenv_user_shell=MARKER_SHELL, **host_vars)
    group_vars = inventory.path.parent / "group_vars"
    group_vars.unlink()
    shutil.copytree(ROOT / "inventory" / "group_vars", group_vars)
    pin = ("lock.yml", "sha256: null  # none published", f"sha256: {HEX}  # pinned for the test")
    edits = list(edits) if any(edit[1] == pin[1] for edit in edits) else [pin, *edits]
    for name, old, new in edits:
        path = group_vars / "all" / name
        text = path.read_text(encoding="utf-8")
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return inventory


def line_of(inventory, name):
    lines = inventory.path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip().startswith(f"{name}:"))


def lock_line(text):
    """The line number of `text` in the repository's lock.yml (the copy keeps the line numbers)."""
    lines = (ROOT / "inventory" / "group_vars" / "all" / "lock.yml").read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


SETTINGS_LINE = {
    name: next(
        n
        for n, line in enumerate((ROOT / "inventory/group_vars/all/settings.yml").read_text().splitlines(), 1)
        if line.startswith(f"{name}:")
    )
    for name in ("sdenv_webui_dir", "sdenv_snapshot_retention", "sdenv_webui_port")
}

# (id, target, host vars, group_vars edits, make variables, expected words). "{at:NAME}" is the test
# inventory's file and the line that sets NAME, "{group_vars}" its group_vars/all directory, "{state}" the
# test's state directory, "{tmp}" the test's temporary directory, "{user}" the throwaway account.
CASES = [
    # The three the issue starts from, each from where a user would write it.
    ("sha256 not hex, lock.yml", "provision", {},
     [("lock.yml", "sha256: 1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c", "sha256: 1A17BCD")], {},
     "{group_vars}/lock.yml line %d sets sdenv_lock.models[0].sha256 to '1A17BCD': expected 64 lowercase hexadecimal"
     " digits (a SHA256), or null until make pin-models records it." % lock_line("sha256: 1a17bcd")),
    ("webui dir relative, settings.yml", "provision", {},
     [("settings.yml", 'sdenv_webui_dir: "{{ sdenv_user_home }}/stable-diffusion-webui"', "sdenv_webui_dir: relative/sd")], {},
     "{group_vars}/settings.yml line %d sets sdenv_webui_dir to 'relative/sd': expected an absolute, normal path"
     % SETTINGS_LINE["sdenv_webui_dir"]),
    ("webui dir /, -e", "provision", {}, [], {"ARGS": "-e sdenv_webui_dir=/"},
     "-e on the command line sets sdenv_webui_dir to '/': expected a path of its own, not / itself."),
    # Paths
    ("state dir /", "provision", {"sdenv_state_dir": "/"}, [], {},
     "{at:sdenv_state_dir} sets sdenv_state_dir to '/': expected a path of its own, not / itself."),
    ("webui dir a system directory", "provision", {"sdenv_webui_dir": "/usr/share"}, [], {},
     "sets sdenv_webui_dir to '/usr/share': expected a path of its own, not the system directory /usr/share."),
    ("store inside a system tree", "provision", {"sdenv_snapshot_store": "/etc/sdenv-snapshots"}, [], {},
     "sets sdenv_snapshot_store to '/etc/sdenv-snapshots': expected a path of its own outside /etc"),
    ("webui dir in root's home", "provision", {"sdenv_webui_dir": "/root/stable-diffusion-webui"}, [], {},
     "expected a path outside /root, the home of the account root."),
    ("bundle dir above the state dir", "provision", {"sdenv_models_bundle_dirs": ["{tmp}"]}, [], {},
     "sets sdenv_models_bundle_dirs[0] to '{tmp}': expected a path that is neither the state directory {state}"
     " nor a directory above it."),
    ("home not the account's", "provision", {"sdenv_user_home": "/srv/sdenv-dummy"}, [], {},
     "sets sdenv_user_home to '/srv/sdenv-dummy': expected /home/{user}, the home the system gives a new account"),
    # Names, numbers, URLs
    ("user name not a short name", "provision", {"sdenv_user_name": "Sdt Bad"}, [], {},
     "sets sdenv_user_name to 'Sdt Bad': expected a short account name"),
    ("full name too long", "provision", {"sdenv_user_fullname": "D" * 65}, [], {},
     "sets sdenv_user_fullname to '%s': expected a non-empty line of text of at most 64 characters" % ("D" * 65)),
    ("port below 1024", "provision", {"sdenv_webui_port": 80}, [], {},
     "{at:sdenv_webui_port} sets sdenv_webui_port to 80: expected a port number from 1024 to 65535"),
    ("port not a number, -e", "run", {}, [], {"ARGS": "-e sdenv_webui_port=http"},
     "-e on the command line sets sdenv_webui_port to 'http': expected a whole number."),
    ("retention negative, settings.yml", "snapshot-prune", {}, [("settings.yml", "keep_last: 10", "keep_last: -1")], {},
     "{group_vars}/settings.yml line %d sets sdenv_snapshot_retention.keep_last to -1: expected a whole number, 0"
     " or more" % (SETTINGS_LINE["sdenv_snapshot_retention"] + 1)),
    ("homebrew URL not http(s)/file", "provision", {"sdenv_homebrew_repo_url": "git@github.com:Homebrew/brew"}, [], {},
     "expected a URL starting with http:// or https:// or file://."),
    ("model URL ftp", "provision", {}, [("lock.yml", "- https://civitai.com/api/download/models/177164", "- ftp://civitai.com/x")], {},
     "sets sdenv_lock.models[0].urls[0] to 'ftp://civitai.com/x': expected a URL starting with http://"),
    ("model URL file:///etc/shadow", "provision", {}, [("lock.yml", "- https://civitai.com/api/download/models/177164", "- file:///etc/shadow")], {},
     "{group_vars}/lock.yml line %d sets sdenv_lock.models[0].urls[0] to 'file:///etc/shadow': expected a file:// URL naming"
     " a file inside a bundle directory ({state}/model-bundle, from sdenv_models_bundle_dirs or BUNDLE=), the only"
     " places a model file is read from; or an https:// URL." % lock_line("- https://civitai.com/api/download/models/177164")),
    ("model token host over http", "pin-models", {"sdenv_models_token_hosts": {"CIVITAI_TOKEN": ["http://civitai.com"]}}, [], {},
     "sets sdenv_models_token_hosts.CIVITAI_TOKEN[0] to 'http://civitai.com': expected a host name such as civitai.com"),
    ("model size negative", "provision", {}, [("lock.yml", "size: 4265146304", "size: -1")], {},
     "sets sdenv_lock.models[2].size to -1: expected a number of bytes (a positive whole number), or null"),
    ("lock key misspelt", "provision", {}, [("lock.yml", "      sha256: 6ce0", "      sha265: 6ce0")], {},
     "expected no key 'sha265' here (known keys: name, kind, file, sha256, urls, size, source"),
    # Apps: the seed's Mac apps are macOS only (role mac_apps), refused here before anything changes.
    ("Mac app on Linux", "provision", {"sdenv_apps": ["webui", "diffusionbee"]}, [], {},
     ") asks for diffusionbee, a macOS app (Homebrew cask), but this host runs Linux:"
     " remove it from sdenv_apps for this host, or leave the host out with LIMIT."),
    ("extra args a string", "provision", {"sdenv_webui_extra_args": "--api"}, [], {},
     "sets sdenv_webui_extra_args to '--api': expected a list of texts."),
    # Models
    ("model not in the lock", "provision", {"sdenv_models_enabled": ["beautifulRealistic_v7", "nope"]}, [], {},
     "sets sdenv_models_enabled to [\"beautifulRealistic_v7\", \"nope\"]: expected names the lock lists"),
    ("model not pinned", "provision", {},
     [("lock.yml", "sha256: null  # none published", "sha256: null  # as shipped"),
      ("lock.yml", "      urls: []\n      sha256: null  # as shipped",
       "      urls: [\"https://civitai.com/api/download/models/1\"]\n      sha256: null  # as shipped")], {},
     "glasses-2 has no pinned SHA256 in lock.yml: run `make pin-models` to download and show name, size, SHA256"
     " and source, then `make pin-models CONFIRM=yes` to record them; or remove it from sdenv_models_enabled in"
     " settings.yml."),
    ("pending model under STRICT=1", "provision", {},
     [("lock.yml", "sha256: null  # none published", "sha256: null  # as shipped")], {"STRICT": "1"},
     "STRICT=1 refuses pending models: glasses-2 has no URL and no pinned SHA256 in lock.yml; fetch and pin it"
     " first (make provision without STRICT lists the commands), or remove it from sdenv_models_enabled in"
     " settings.yml."),
    ("MODELS= not in the lock", "pin-models", {}, [], {"MODELS": "nope"},
     "make's MODELS= sets sdenv_models_pin_names to 'nope': expected names the lock lists"),
    # The other targets, each with a value it uses
    ("LABEL= with a space", "snapshot", {}, [], {"LABEL": "my label"},
     "make's LABEL= sets sdenv_snapshot_label to 'my label': expected 1-64 letters"),
    ("PATHS= relative", "rollback", {}, [], {"PATHS": "relative/path", "CONFIRM": "yes"},
     "make's PATHS= sets sdenv_snapshot_only_paths[0] to 'relative/path': expected an absolute, normal path"),
    ("dummy is root", "snapshots", {"sdenv_user_name": "root"}, [], {},
     "sets sdenv_user_name to 'root': expected the name of the dummy account, never root (uid 0)."),
    ("store relative", "snapshot-check", {"sdenv_snapshot_store": "snapshots"}, [], {},
     "sets sdenv_snapshot_store to 'snapshots': expected an absolute, normal path"),
    ("full name with a colon", "reset-dummy", {"sdenv_user_fullname": "Dum:my"}, [], {"CONFIRM": "yes"},
     "sets sdenv_user_fullname to 'Dum:my': expected a non-empty line of text of at most 64 characters without ':' or ','."),
    ("verify timeout zero", "verify", {"sdenv_verify_ready_timeout": 0}, [], {},
     "sets sdenv_verify_ready_timeout to 0: expected a number of seconds from 1 to 86400."),
    # Values that carry no origin of their own (null, true/false): found by reading the inventory's files.
    ("null", "provision", {"sdenv_webui_dir": None}, [], {},
     "{at:sdenv_webui_dir} sets sdenv_webui_dir to null: expected a path."),
    ("boolean port", "provision", {}, [("settings.yml", "sdenv_webui_port: 7860", "sdenv_webui_port: true")], {},
     "{group_vars}/settings.yml line %d sets sdenv_webui_port to true: expected a whole number." % SETTINGS_LINE["sdenv_webui_port"]),
    ("dry run too", "provision", {"sdenv_webui_hf_home": "/var"}, [], {"CHECK": "1"},
     "sets sdenv_webui_hf_home to '/var': expected a path of its own, not the system directory /var."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "host_vars", "edits", "variables", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_value_is_one_sentence_and_changes_nothing(
    test_inventory,
    throwaway_user,
    make_target,
    tmp_path,
    apt_before,
    target,
    host_vars,
    edits,
    variables,
    expected,
):
    places = {"tmp": str(tmp_path), "state": str(tmp_path / "state"), "user": throwaway_user}
    host_vars = {k: [v.format(**places) for v in value] if isinstance(value, list) else value for k, value in host_vars.items()}  # fmt: skip
    inventory = inventory_for(test_inventory, edits, **host_vars)
    places.update(hosts=str(inventory), group_vars=str(inventory.path.parent / "group_vars" / "all"))
    real_state = listing(REAL_STATE)

    result = make_target(target, inventory, timeout=600, **variables)

    assert result.returncode != 0, result
    expected = re.sub(
        r"\{at:(\w+)\}", lambda m: f"{inventory} line {line_of(inventory, m.group(1))}", expected
    )
    assert expected.format(**places) in result.output, result
    # The preflight is the one task that ran (it reads the facts it needs itself).
    tasks = [line for line in result.output.splitlines() if line.startswith("TASK [")]
    assert len(tasks) == 1 and tasks[0].startswith("TASK [Check the values this target uses"), tasks
    assert result.recap.get("changed") == 0 and result.recap.get("failed") == 1, result
    problems = result.output.split("FAILED!", 1)[1].split("PLAY RECAP", 1)[0]  # the sentences, as printed
    assert "Traceback" not in result.output
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before, problems)


def assert_nothing_changed(user, inventory, real_state, apt_before, problems=""):
    for database in ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"):
        assert lines_naming(user, database) == [], f"{database} names {user}: {problems}"
    assert not Path("/home", user).exists(), problems
    assert not (inventory.path.parent.parent / "state").exists(), problems  # the test's own state directory
    assert listing(REAL_STATE) == real_state, "/var/lib/sdenv changed"
    if apt_before is None:
        return  # the caller has other proof that no role ran
    assert not installed(MARKER_PACKAGE), f"apt installed {MARKER_PACKAGE}: {problems}"
    if APT_HISTORY.exists():
        with open(APT_HISTORY, encoding="utf-8", errors="replace") as handle:
            handle.seek(min(apt_before, os.path.getsize(APT_HISTORY)))
            assert MARKER_PACKAGE not in handle.read(), "apt's history names the marker package"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "The inventory {inventory} (INVENTORY=) does not exist: give an existing file"),
        ("unparsable", "The inventory {inventory} (INVENTORY=) cannot be read: YAML parsing failed"),
        ("no host", "The inventory {inventory} (INVENTORY=) lists no host: add one under all: hosts:"),
        ("limit", "LIMIT=sdt-nohost names sdt-nohost, which matches no host of the inventory {inventory}"),
    ],
)
def test_inventory_problems_are_one_sentence_for_every_target(tmp_path, make_target, case, expected):
    inventory = tmp_path / "hosts.yml"
    variables = {}
    if case == "unparsable":
        inventory.write_text("all: [\n")
    elif case == "no host":
        inventory.write_text("all:\n  hosts: {}\n")
    elif case == "limit":
        inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
        variables["LIMIT"] = "sdt-nohost"
    # Each make target that runs a playbook: the check comes before the playbook, whichever it is.
    for target in (
        ("provision", "snapshots") if case != "missing" else ("provision", "verify", "run", "reset-dummy")
    ):
        result = make_target(target, inventory, timeout=300, **variables)
        assert result.returncode != 0, result
        sentences = [
            line for line in result.output.splitlines() if expected.format(inventory=inventory) in line
        ]
        assert len(sentences) == 1, result
        assert "PLAY [" not in result.output and "WARNING" not in result.output, result


def test_a_yaml_error_in_the_settings_is_one_sentence_with_its_file_and_line(
    test_inventory, make_target, throwaway_user, apt_before
):
    # Ansible itself prints only the parser's words ("YAML parsing failed: ..."), with no file or line.
    inventory = inventory_for(
        test_inventory, [("settings.yml", "sdenv_user_fullname: Dummy", "sdenv_user_fullname: [Dummy")]
    )
    real_state = listing(REAL_STATE)
    result = make_target("provision", inventory, timeout=300)
    assert result.returncode != 0, result
    settings = inventory.path.parent / "group_vars" / "all" / "settings.yml"
    lines = settings.read_text().splitlines()
    began = next(n for n, text in enumerate(lines, 1) if text.startswith("sdenv_user_fullname:"))
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("sdenv_user_shell:"))  # the next key
    assert (
        f"{settings} line {line} cannot be read as YAML: did not find expected ',' or ']' (while parsing a flow"
        f" sequence, begun on line {began}); fix it, then run again." in result.output
    ), result
    assert "PLAY [" not in result.output, result
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before)


def test_a_port_in_use_is_named_before_make_run_starts_anything(
    test_inventory, make_target, throwaway_user, apt_before
):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        inventory = inventory_for(test_inventory, sdenv_webui_port=port)
        real_state = listing(REAL_STATE)
        result = make_target("run", inventory, timeout=300)
    finally:
        listener.close()
    assert result.returncode != 0, result
    assert (
        f"{inventory} line {line_of(inventory, 'sdenv_webui_port')} sets sdenv_webui_port to {port}, and another"
        f" program already listens on port {port} of this host: stop it, or set sdenv_webui_port to a free port."
        in result.output
    ), result
    tasks = [line for line in result.output.splitlines() if line.startswith("TASK [")]
    assert len(tasks) == 1 and tasks[0].startswith("TASK [Check the values this target uses"), tasks
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before)


def test_one_bad_host_stops_every_host_before_any_change(
    test_inventory, make_target, throwaway_user, apt_before
):
    """Two hosts (both this machine): the first one's values are good, the second's port is not. Neither
    is changed: the preflight checks every host before the first task of the run."""
    inventory = inventory_for(test_inventory)
    document = yaml.safe_load(inventory.path.read_text(encoding="utf-8"))
    hosts = document["all"]["hosts"]
    hosts["second"] = {**hosts["localhost"], "sdenv_webui_port": 22}
    inventory.path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    real_state = listing(REAL_STATE)
    result = make_target("provision", inventory, timeout=600)
    assert result.returncode != 0, result
    assert (
        "fatal: [second]" in result.output and "sets sdenv_webui_port to 22: expected a port" in result.output
    )
    # The good host's values pass: it may fail only its reachability probe (the shipped lock's upstreams,
    # which this machine cannot reach), never on a value of its own.
    if "fatal: [localhost]" in result.output:
        own = result.output.split("fatal: [localhost]", 1)[1].split("fatal: [", 1)[0]
        own = own.split("PLAY RECAP", 1)[0]  # not the fleet table under the recap, which has every host's row
        assert "cannot be reached" in own and "sdenv_webui_port" not in own, result
    plays = [line for line in result.output.splitlines() if line.startswith("PLAY [")]
    assert len(plays) == 1 and plays[0].startswith("PLAY [Check every setting and lock value"), plays
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before, result.output)


def test_a_host_that_cannot_be_reached_stops_the_run(test_inventory, make_target, throwaway_user, apt_before):
    inventory = inventory_for(test_inventory)
    document = yaml.safe_load(inventory.path.read_text(encoding="utf-8"))
    # Port 9 (discard) on this machine: nothing listens there, so the connection is refused at once.
    document["all"]["hosts"]["unreachable"] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": 9,
        "ansible_connection": "ssh",
    }
    inventory.path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    real_state = listing(REAL_STATE)
    result = make_target("provision", inventory, timeout=600)
    assert result.returncode != 0 and "fatal: [unreachable]: UNREACHABLE!" in result.output, result
    assert "PLAY RECAP" in result.output and "PLAY [Provision" not in result.output, result
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before, result.output)


def test_a_bad_password_is_named_by_where_it_comes_from_and_never_shown(
    test_inventory, make_target, throwaway_user, apt_before
):
    password = "has a space " + os.urandom(4).hex()
    inventory = inventory_for(test_inventory)
    real_state = listing(REAL_STATE)
    result = make_target("provision", inventory, timeout=600, env={"SDENV_DUMMY_PASSWORD": password})
    assert result.returncode != 0, result
    assert "The dummy password contains white space" in result.output, result
    assert "(the password from the environment variable SDENV_DUMMY_PASSWORD)" in result.output, result
    assert password not in result.output and password.split()[-1] not in result.output
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before, result.output)


@pytest.mark.parametrize("check", ["", "1"], ids=["real run", "dry run"])
def test_an_offline_machine_gets_one_sentence_per_source_and_nothing_changes(
    test_inventory, throwaway_user, check
):
    """make provision with no network at all (its own empty network namespace, so even DNS fails): the
    preflight names every source the run needs (the shipped lock: GitHub, PyPI, Civitai) in one sentence each,
    with what to do, before the first change; the dry run says the same instead of passing."""
    inventory = inventory_for(test_inventory)
    real_state = listing(REAL_STATE)
    argv = ["unshare", "--net", *make_argv("provision", inventory, **({"CHECK": check} if check else {}))]
    done = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "HTTPS_PROXY": "", "HTTP_PROXY": "", "SSL_CERT_FILE": ""},
    )  # fmt: skip
    result = MakeResult(done)
    assert result.returncode != 0, result
    lines = result.output.split("FAILED!", 1)[1].split("PLAY RECAP", 1)[0]
    assert "9 sources this run needs cannot be reached; nothing was changed:" in lines, result
    for source in (
        "the WebUI repository (sdenv_lock.webui.repo) at https://github.com/AUTOMATIC1111/stable-diffusion-webui.git",
        "the sub-repository BLIP (sdenv_lock.repositories[4]) at https://github.com/salesforce/BLIP.git",
        "the CLIP archive (sdenv_lock.webui_venv.clip.url) at https://github.com/openai/CLIP/archive/",
        "the package index (sdenv_webui_pip_index_url) at https://pypi.org/simple/",
        "the model beautifulRealistic_v7 (sdenv_lock.models[0].urls) at https://civitai.com/api/download/models/177164",
    ):
        assert source in lines, (source, lines)
    remedy = "give an offline bundle with BUNDLE=dir, or set HTTPS_PROXY"
    assert " ".join(lines.split()).count(remedy) == 9, lines
    assert "a reachable mirror URL in settings.yml (sdenv_webui_pip_index_url)" in " ".join(lines.split())
    tasks = [line for line in result.output.splitlines() if line.startswith("TASK [")]
    assert len(tasks) == 1 and tasks[0].startswith("TASK [Check the values this target uses"), tasks
    # No account, no home, no record, no uv cache (it lives in the state directory); the preflight was the one
    # task (above), so no package was installed either (apt's marker is not needed for that here).
    assert_nothing_changed(throwaway_user, inventory, real_state, None, lines)


@pytest.mark.parametrize(
    "case", ["state dir through a link to /etc", "webui dir a link another account made"]
)
def test_a_place_reached_through_a_link_is_refused_by_the_preflight(
    test_inventory, throwaway_user, make_target, tmp_path, apt_before, case
):
    # Links the test makes in its own directory: root's link to /etc (judged where it leads), and a link
    # another account (nobody) owns in a directory it owns (refused, whatever it leads to).
    if case.startswith("state"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "link").symlink_to("/etc")
        setting, value = "sdenv_state_dir", f"{tmp_path}/x/link/state"
        expected = (
            f"sets sdenv_state_dir to '{value}': expected a path of its own outside /etc, which belongs to the"
            " system, judged where it resolves to (/etc/state)."
        )
    else:
        (tmp_path / "theirs").mkdir()
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "theirs" / "webui").symlink_to(tmp_path / "elsewhere")
        for path in (tmp_path / "theirs", tmp_path / "theirs" / "webui"):
            os.lchown(path, 65534, 65534)
        setting, value = "sdenv_webui_dir", f"{tmp_path}/theirs/webui"
        expected = (
            f"sets sdenv_webui_dir to '{value}': expected a path with no symbolic link another account can"
            f" change; {value} is one, and the toolkit (as root) follows none"
        )
    inventory = inventory_for(test_inventory, **{setting: value})
    real_state = listing(REAL_STATE)

    result = make_target("provision", inventory, timeout=600)

    assert result.returncode != 0, result
    assert expected in result.output, result
    assert "Traceback" not in result.output
    assert not Path("/etc/state").exists()
    assert not (tmp_path / "elsewhere").exists() or list((tmp_path / "elsewhere").iterdir()) == []
    assert_nothing_changed(throwaway_user, inventory, real_state, apt_before)
