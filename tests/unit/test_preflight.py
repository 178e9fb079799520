"""The preflight's engine and rules (plugins/module_utils/sdenv_preflight*.py) as pure logic.

The values are what Ansible resolves for a Linux host from the repository's settings.yml and lock.yml; each
test changes one and reads the sentence. The real make runs are in tests/integration/test_preflight.py.
"""

import copy
import functools
from pathlib import Path

import pytest
import sdenv_preflight as engine
import sdenv_preflight_rules as rules
import yaml

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "inventory" / "group_vars" / "all"
PROVISION = ["dummy_user", "homebrew", "python", "webui", "comfyui", "models", "snapshot"]
ALL_ENTRY_POINTS = [
    *PROVISION, "dummy_user:reset", "models:pin", "snapshot:rollback", "snapshot:list", "snapshot:check",
    "snapshot:prune", "webui:run", "comfyui:run", "tests/verify/argument_specs.yml",
]  # fmt: skip

ACCOUNTS = [
    {"name": "root", "uid": 0, "home": "/root"},
    {"name": "daemon", "uid": 1, "home": "/usr/sbin"},
    {"name": "www-data", "uid": 33, "home": "/var/www"},
    {"name": "nobody", "uid": 65534, "home": "/nonexistent", "shell": "/usr/sbin/nologin"},
    {"name": "svc", "uid": 1500, "home": "/var/lib/svc", "shell": "/bin/sh"},
    {"name": "alice", "uid": 1000, "home": "/home/alice"},
]
HOST = {
    "system": "Linux", "os_family": "Debian", "distribution": "Debian", "accounts": ACCOUNTS,
    "first_regular_uid": 1000, "home_root": None,
}  # fmt: skip


@functools.cache
def documents():
    found = {}
    for path in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        found[path.parent.parent.name] = yaml.safe_load(path.read_text())
    found["tests/verify/argument_specs.yml"] = yaml.safe_load(
        (ROOT / "tests/verify/argument_specs.yml").read_text()
    )
    return found


@functools.cache
def shipped(name):
    return yaml.safe_load((SETTINGS / name).read_text())


def lock():
    value = copy.deepcopy(shipped("lock.yml")["sdenv_lock"])
    for model in value["models"]:
        model["sha256"] = model["sha256"] or "ab" * 32  # as after make pin-models
    return value


def good_values():
    """The settings as Ansible resolves them for user dummy on a Debian host (templates filled in)."""
    settings = copy.deepcopy(shipped("settings.yml"))
    values = {k: v for k, v in settings.items() if not (isinstance(v, str) and "{{" in v)}
    values.update(
        sdenv_user_home="/home/dummy",
        sdenv_state_dir="/var/lib/sdenv",
        sdenv_webui_dir="/home/dummy/stable-diffusion-webui",
        sdenv_webui_extra_args=["--skip-torch-cuda-test", "--use-cpu", "all", "--no-half"],
        sdenv_webui_hf_home="/home/dummy/.cache/huggingface",
        sdenv_comfyui_dir="/home/dummy/ComfyUI",
        sdenv_comfyui_extra_args=["--cpu"],
        sdenv_snapshot_store="/srv/sdenv/snapshots/localhost",
        sdenv_snapshot_paths=[
            "/home/dummy/stable-diffusion-webui",
            "/home/dummy/sd-models",
            "/home/dummy/.zprofile",
        ],
        sdenv_model_store="/home/dummy/sd-models",
        sdenv_models_bundle_dirs=["/var/lib/sdenv/model-bundle"],
        sdenv_lock=lock(),
        sdenv_webui_platform="Linux-x86_64",
        sdenv_confirm="no",
        sdenv_force="no",
        sdenv_snapshot_label="",
        sdenv_snapshot_to="latest",
        sdenv_snapshot_only_paths=[],
        sdenv_models_pin_names=[],
        sdenv_run_spec="/tmp/sdenv-run.abc",
        sdenv_verify_out="/srv/sdenv/reports/verify-1",
    )
    values["sdenv_webui_ui_defaults"] = dict(values["sdenv_webui_ui_defaults"], checkpoint="a.safetensors")
    return values


def run(uses=PROVISION, host=HOST, origins=None, references=None, **changes):
    values = good_values()
    for name, value in changes.items():
        if value is DELETE:
            values.pop(name, None)
        else:
            values[name] = value
    options = engine.load_entry_points(documents(), uses)
    where = {name: ("settings.yml line 1", False) for name in values}
    where.update(origins or {})
    # As the action plugin finds them: settings.yml's templates (sdenv_user_home uses sdenv_user_name, ...).
    settings = shipped("settings.yml")
    used = {name: engine.template_references(value) for name, value in settings.items()}
    return engine.check(
        options, values, where, rules.RULES, rules.CROSS, host, rules.SYSTEM_PATHS, uses,
        references=used if references is None else references,
    )  # fmt: skip


DELETE = object()


def one(**kwargs):
    problems = run(**kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def test_the_shipped_settings_and_a_pinned_lock_pass_for_every_entry_point():
    assert run(uses=ALL_ENTRY_POINTS) == []


def test_every_option_of_every_argument_spec_has_a_rule_entry():
    """A new setting must say what its type does not (None is an explicit 'the type is enough')."""
    missing = [
        f"{where}: {name}"
        for where, document in documents().items()
        for entry in document["argument_specs"].values()
        for name in entry.get("options") or {}
        if name not in rules.RULES
    ]
    assert missing == []
    unknown = set(rules.RULES) - {
        name
        for d in documents().values()
        for e in d["argument_specs"].values()
        for name in e.get("options") or {}
    }
    assert unknown == set(), "rules for settings no spec declares"


def test_the_sentence_names_where_the_setting_the_value_and_what_is_expected():
    sentence = one(sdenv_webui_port=80, origins={"sdenv_webui_port": ("-e on the command line", False)})
    assert sentence == (
        "-e on the command line sets sdenv_webui_port to 80: expected a port number from 1024 to 65535 (below"
        " 1024 needs root, and the WebUI never runs as root)."
    )


def test_the_model_store_lies_apart_from_the_webui_tree():
    """Deleting an app's folder must never delete a model: the store is neither inside it nor above it."""
    inside = one(sdenv_model_store="/home/dummy/stable-diffusion-webui/models")
    assert "sdenv_model_store" in inside and "apart from /home/dummy/stable-diffusion-webui" in inside
    assert "apart from" in one(
        sdenv_model_store="/home/dummy", sdenv_snapshot_paths=["/home/dummy/.zprofile"]
    )
    assert "outside /etc, which belongs to the system" in one(sdenv_model_store="/etc/sd-models")


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("sdenv_webui_dir", "relative/sd", "an absolute, normal path"),
        ("sdenv_webui_dir", "/", "not / itself"),
        ("sdenv_webui_dir", "/home/dummy/../x", "an absolute, normal path"),
        ("sdenv_webui_dir", "/home/dummy/sd/", "an absolute, normal path"),
        ("sdenv_webui_dir", "//home/dummy/sd", "an absolute, normal path"),
        ("sdenv_webui_dir", "~/sd", "an absolute, normal path"),
        ("sdenv_webui_dir", "/usr", "not the system directory /usr"),
        ("sdenv_webui_dir", "/usr/lib/sd", "outside /usr, which belongs to the system"),
        ("sdenv_webui_dir", "/etc/sd", "outside /etc"),
        ("sdenv_webui_dir", "/System/Library/sd", "outside /System"),
        ("sdenv_webui_dir", "/opt/homebrew/sd", "outside /opt/homebrew"),
        ("sdenv_webui_dir", "/home/alice", "not the home of the account alice"),
        ("sdenv_webui_dir", "/home/alice/sd", "outside /home/alice, the home of the account alice"),
        ("sdenv_webui_dir", "/root/sd", "outside /root, the home of the account root"),
        ("sdenv_webui_dir", "/var/lib", "not the system directory /var/lib"),
        ("sdenv_webui_dir", "/var/www", "not the system directory /var/www"),
        ("sdenv_snapshot_store", "/var/www", "not the system directory /var/www"),
        ("sdenv_snapshot_store", "/Users", "not the system directory /Users"),
        ("sdenv_snapshot_store", "/Library", "not the system directory /Library"),
        ("sdenv_models_bundle_dirs", ["/var/lib"], "not the system directory /var/lib"),
        ("sdenv_snapshot_paths", ["/home/dummy/x", "/boot/grub"], "outside /boot"),
        ("sdenv_state_dir", "/", "not / itself"),
        ("sdenv_state_dir", "state", "an absolute, normal path"),
        ("sdenv_state_dir", "/usr/local", "not the system directory /usr/local"),
        ("sdenv_user_shell", "zsh", "an absolute, normal path"),
        ("sdenv_user_shell", "/usr/bin", "not the system directory /usr/bin"),
        ("sdenv_user_python_interpreter", "/home/alice", "not the home of the account alice"),
    ],
)
def test_paths_refused(setting, value, words):
    sentence = one(**{setting: value})
    assert (
        words in sentence
        and setting in sentence
        and repr(value if isinstance(value, str) else "")[1:-1] in sentence
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("sdenv_webui_dir", "/srv/sd"),
        ("sdenv_webui_dir", "/opt/sd"),
        ("sdenv_webui_dir", "/usr/local/sd"),  # the local administrator's, not the distribution's
        ("sdenv_webui_dir", "/tmp/pytest-of-root/x/webui"),
        ("sdenv_webui_dir", "/home/dummy/sd"),
        ("sdenv_state_dir", "/var/db/sdenv"),  # macOS's default
        ("sdenv_state_dir", "/tmp/test/state"),
        ("sdenv_snapshot_store", "/root/sdenv/snapshots/localhost"),  # the repository in root's home
        ("sdenv_user_shell", "/usr/bin/zsh"),
        ("sdenv_user_python_interpreter", "/usr/local/bin/python3"),
        ("sdenv_models_bundle_dirs", ["/var/lib/sdenv/model-bundle", "/srv/bundle"]),
    ],
)
def test_paths_accepted(setting, value):
    assert run(**{setting: value}) == []


def test_a_path_above_the_state_directory_is_refused():
    sentence = one(
        sdenv_models_bundle_dirs=["/var/lib/sdenv/model-bundle", "/srv/x"], sdenv_state_dir="/srv/x/state"
    )
    assert (
        "sdenv_models_bundle_dirs[1]" in sentence and "neither the state directory /srv/x/state" in sentence
    )


def test_the_state_directory_and_store_stay_out_of_the_dummys_and_the_captured_trees():
    assert "the state directory outside /home/dummy (sdenv_user_home)" in one(
        sdenv_state_dir="/home/dummy/state"
    )
    assert "apart from /srv/captured" in one(
        sdenv_snapshot_paths=["/srv/captured"], sdenv_snapshot_store="/srv/captured/store"
    )
    assert "apart from /srv/store/inner" in one(
        sdenv_snapshot_paths=["/srv/store/inner"], sdenv_snapshot_store="/srv/store"
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"sdenv_user_name": "Dummy"}, "a short account name"),
        ({"sdenv_user_name": "du mmy"}, "a short account name"),
        ({"sdenv_user_name": "-rf"}, "a short account name"),
        ({"sdenv_user_name": "root", "sdenv_user_home": "/root"}, "never root"),
        ({"sdenv_user_name": "www-data", "sdenv_user_home": "/var/www"}, "system account here (uid 33, below 1000)"),
        ({"sdenv_user_fullname": "Dum:my"}, "without ':' or ','"),
        ({"sdenv_user_fullname": ""}, "a non-empty line of text"),
        ({"sdenv_user_fullname": "D" * 65}, "at most 64 characters"),
        ({"sdenv_user_fullname": "Dum\nmy"}, "a non-empty line of text"),
        ({"sdenv_user_name": "nobody", "sdenv_user_home": "/nonexistent"}, "nobody is a system account here (its shell /usr/sbin/nologin refuses logins), whatever ADOPT says"),
        ({"sdenv_user_name": "svc", "sdenv_user_home": "/var/lib/svc"}, "svc is a system account here (its home /var/lib/svc is outside /home)"),
        ({"sdenv_user_home": "/srv/dummy"}, "/home/dummy, the home the system gives a new account here"),
        ({"sdenv_user_password_env": "NOT-A-NAME"}, "an environment variable name"),
        ({"sdenv_webui_port": 70000}, "from 1024 to 65535"),
        ({"sdenv_webui_port": "http"}, "a whole number"),
        ({"sdenv_webui_port": True}, "a whole number"),
        ({"sdenv_snapshot_retention": {"keep_last": -1, "keep_hourly_hours": 24, "keep_daily_days": 30, "keep_weekly_weeks": 0}}, "0 or more"),
        ({"sdenv_snapshot_retention": {"keep_last": 1}}, "it has no keep_hourly_hours"),
        ({"sdenv_models_enabled": "beautifulRealistic_v7"}, "a list of texts"),
        ({"sdenv_models_enabled": ["nope"]}, "the lock lists in sdenv_lock.models (beautifulRealistic_v7, glasses-2, v1-5-pruned-emaonly); it has no nope"),
        ({"sdenv_homebrew_repo_url": "git@github.com:Homebrew/brew"}, "a URL starting with http:// or https:// or file://"),
        ({"sdenv_webui_pip_index_url": "ftp://mirror/simple"}, 'or "" for PyPI'),
        ({"sdenv_webui_venv_bootstrap": "maybe"}, "true or false"),
        ({"sdenv_webui_ui_defaults": {"checkpoint": "a.safetensors", "auto_launch_browser": "Disable", "sampler": "x", "scheduler": "y", "steps": 20, "width": 500, "height": 512}}, "a multiple of 8"),
        ({"sdenv_webui_ui_defaults": {"checkpoint": "a", "auto_launch_browser": "Disable", "sampler": "x", "scheduler": "y", "steps": 20, "width": 512, "height": 512, "step": 1}}, "no key 'step' here"),
        ({"sdenv_force": "sure"}, "one of yes, no"),
        ({"sdenv_snapshot_label": "base\n"}, "1-64 letters"),
        ({"sdenv_snapshot_label": "../x"}, "1-64 letters"),
        ({"sdenv_linux_packages": ["git", "rm -rf"]}, "a Debian package name"),
        ({"sdenv_webui_extra_args": ["--api\nrm -rf /"]}, "a non-empty line of text"),
    ],
)  # fmt: skip
def test_settings_refused(changes, words):
    sentence = one(uses=[*PROVISION, "dummy_user:reset"], **changes)
    assert words in sentence, sentence


def test_a_missing_required_setting_and_an_unresolvable_one():
    assert one(sdenv_webui_dir=DELETE).startswith("sdenv_webui_dir is not set (settings.yml, lock.yml")
    sentence = one(sdenv_webui_port=engine.Unresolved("{{ nope }}", "'nope' is undefined"))
    assert "sets sdenv_webui_port to '{{ nope }}', which cannot be resolved ('nope' is undefined)" in sentence


def test_a_value_made_from_a_wrong_setting_is_not_reported_again():
    problems = run(
        sdenv_user_home="relative",
        sdenv_webui_dir="relative/stable-diffusion-webui",
        references={"sdenv_webui_dir": {"sdenv_user_home"}},
    )
    assert len(problems) == 1 and "sdenv_user_home" in problems[0]


def test_derived_values_count_only_when_no_setting_is_wrong():
    origins = {"sdenv_state_file": ("roles/dummy_user/defaults/main.yml line 3", True)}
    assert "sdenv_state_file" in one(sdenv_state_file="x/state.json", origins=origins)
    problems = run(sdenv_state_file="x/state.json", sdenv_webui_port=1, origins=origins)
    assert len(problems) == 1 and "sdenv_webui_port" in problems[0]


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("models", 0, "sha256"), "1A17BCD", "64 lowercase hexadecimal digits"),
        (("models", 0, "sha256"), "xyz", "or null until make pin-models records it"),
        (("models", 0, "size"), -5, "a number of bytes"),
        (("models", 0, "size"), "big", "a number of bytes"),
        (("models", 0, "kind"), "vae", "one of checkpoint, lora"),
        (("models", 0, "urls"), ["ftp://x/y"], "a URL starting with http://"),
        (("models", 0, "urls"), ["https://"], "a URL starting with http://"),
        (("models", 0, "file"), "../x.safetensors", "a file name (no /)"),
        (("models", 0, "token_env"), "CIVITAI TOKEN", "an environment variable name"),
        (("models", 0, "sha265"), "ab" * 32, "no key 'sha265' here"),
        (("webui", "commit"), "82a973c", "a full git commit id"),
        (("webui", "repo"), "github.com/x/y", "a URL starting with"),
        (("repositories", 1, "commit"), "HEAD", "a full git commit id"),
        (("webui_venv", "clip", "sha256"), "abc", '64 lowercase hexadecimal digits (a SHA256), or ""'),
        (("webui_venv", "torch", "Linux-x86_64", "torch"), "latest", "a version number"),
        (("clip_tokenizer", "sha256", "vocab.json"), "00", "64 lowercase hexadecimal digits"),
    ],
)
def test_lock_values_refused_with_their_place_in_the_lock(path, value, words):
    changed = lock()
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    sentence = one(sdenv_lock=changed)
    assert (
        "sdenv_lock." + ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
        in sentence
    )
    assert words in sentence, sentence


def test_lock_entries_must_be_unique_and_complete():
    changed = lock()
    changed["models"].append(copy.deepcopy(changed["models"][0]))
    assert "a name no other entry has ([0] has the same)" in one(sdenv_lock=changed)
    changed = lock()
    del changed["models"][0]["file"]
    assert "it has no file" in one(sdenv_lock=changed)
    changed = lock()
    del changed["webui"]
    assert "has no sdenv_lock.webui: expected it there, because webui reads it" in one(sdenv_lock=changed)
    assert run(uses=["models"], sdenv_lock={"models": lock()["models"]}) == []


def test_an_unpinned_enabled_model_with_urls_gets_the_pin_models_sentence():
    changed = lock()
    changed["models"][1]["sha256"] = None
    changed["models"][1]["urls"] = [
        "https://civitai.com/api/download/models/1"
    ]  # make pin-models can fetch it
    assert one(sdenv_lock=changed) == (
        "glasses-2 has no pinned SHA256 in lock.yml: run `make pin-models` to download and show name, size,"
        " SHA256 and source, then `make pin-models CONFIRM=yes` to record them; or remove it from"
        " sdenv_models_enabled in settings.yml."
    )
    # Pinning is what make pin-models is for, and other targets do not install models.
    assert run(uses=["models:pin"], sdenv_lock=changed) == []
    assert run(uses=["snapshot"], sdenv_lock=changed) == []


def test_a_model_with_neither_url_nor_pin_is_pending_not_a_refusal():
    shipped_lock = lock()
    shipped_lock["models"][1]["sha256"] = None  # glasses-2 as lock.yml ships it: no URL, no pin
    assert run(sdenv_lock=shipped_lock) == []
    assert run(uses=[*PROVISION, "tests/verify/argument_specs.yml"], sdenv_lock=shipped_lock) == []


def test_strict_turns_a_pending_model_into_a_refusal():
    shipped_lock = lock()
    shipped_lock["models"][1]["sha256"] = None
    assert one(sdenv_lock=shipped_lock, sdenv_strict="yes") == (
        "STRICT=1 refuses pending models: glasses-2 has no URL and no pinned SHA256 in lock.yml; fetch and pin it"
        " first (make provision without STRICT lists the commands), or remove it from sdenv_models_enabled in"
        " settings.yml."
    )
    assert run(sdenv_lock=shipped_lock, sdenv_strict="no") == []
    assert run(sdenv_strict="yes") == []  # nothing pending: STRICT has nothing to refuse


def test_pin_names_must_be_in_the_lock():
    assert "it has no nope" in one(uses=["models:pin"], sdenv_models_pin_names=["glasses-2", "nope"])


def test_torch_pins_for_the_hosts_platform():
    sentence = one(sdenv_webui_platform="Linux-riscv64")
    assert "sdenv_lock.webui_venv.torch" in sentence and "platform Linux-riscv64" in sentence
    assert run(sdenv_webui_platform="Linux-riscv64", sdenv_webui_venv_bootstrap=False) == []


def test_uv_and_the_archives_trees_are_pinned():
    no_uv = lock()
    del no_uv["uv"]["wheels"]["Linux-x86_64"]
    sentence = one(sdenv_lock=no_uv)
    assert (
        "sdenv_lock.uv.wheels" in sentence and "uv's wheel for this host's platform Linux-x86_64" in sentence
    )
    bad_tree = lock()
    bad_tree["webui_venv"]["clip"]["tree"] = "not-a-tree"
    assert "sdenv_lock.webui_venv.clip.tree" in one(sdenv_lock=bad_tree)
    no_pip = lock()
    del no_pip["webui_venv"]["pip"]
    assert "pip" in one(sdenv_lock=no_pip)


def test_the_password_is_checked_but_never_shown():
    secret = "pass word"
    origins = {"sdenv_user_password_value": ("the environment variable SDENV_DUMMY_PASSWORD", False)}
    sentence = one(sdenv_user_password_value=secret, origins=origins)
    assert secret not in sentence and "SDENV_DUMMY_PASSWORD" in sentence and "white space" in sentence
    assert run(sdenv_user_password_value="") == []  # none given: the role generates one


def test_an_unsupported_platform_is_refused_only_where_packages_are_installed():
    fedora = dict(HOST, os_family="RedHat", distribution="Fedora")
    assert "This host runs Fedora (RedHat)" in one(host=fedora)
    assert run(uses=["dummy_user"], host=fedora) == []


def test_macos_homes_and_first_uid():
    mac = dict(HOST, system="Darwin", os_family="Darwin", first_regular_uid=501, accounts=[
        {"name": "root", "uid": 0, "home": "/var/root"}, {"name": "_www", "uid": 70, "home": "/Library/WebServer"},
        {"name": "admin", "uid": 501, "home": "/Users/admin"},
    ])  # fmt: skip
    assert "/Users/dummy, the home the system gives a new account" in one(host=mac)
    macos = {
        "sdenv_user_home": "/Users/dummy",
        "sdenv_webui_dir": "/Users/dummy/stable-diffusion-webui",
        "sdenv_webui_hf_home": "/Users/dummy/.cache/huggingface",
        "sdenv_snapshot_paths": ["/Users/dummy/stable-diffusion-webui", "/Users/dummy/.zprofile"],
        "sdenv_state_dir": "/var/db/sdenv",
        "sdenv_models_bundle_dirs": ["/var/db/sdenv/model-bundle"],
        "sdenv_webui_platform": "Darwin-arm64",
    }
    assert run(host=mac, **macos) == []
    assert "outside /Users/admin, the home of the account admin" in one(
        host=mac, **dict(macos, sdenv_webui_dir="/Users/admin/sd")
    )
    assert "system account here (uid 70, below 501)" in one(host=mac, **dict(macos, sdenv_user_name="_www"))


def test_secrets_are_never_shown():
    tokens = {"CIVITAI TOKEN": "tok-secret"}
    sentence = one(sdenv_models_tokens=tokens)
    assert "tok-secret" not in sentence and "a value (not shown)" in sentence


@pytest.mark.parametrize(
    ("run_tags", "skip_tags", "chosen"),
    [
        (["all"], [], PROVISION),
        (["dummy_user"], [], ["dummy_user"]),
        (["dummy_user", "homebrew", "python"], [], ["dummy_user", "homebrew", "python"]),
        (["all"], ["models", "snapshot"], ["dummy_user", "homebrew", "python", "webui", "comfyui"]),
    ],
)
def test_tags_narrow_what_is_checked(run_tags, skip_tags, chosen):
    assert engine.selected_by_tags(PROVISION, run_tags, skip_tags, set(PROVISION)) == chosen


def test_type_conversion_is_as_strict_as_the_roles_need():
    assert engine.convert("8080", "int") == (True, 8080)
    assert engine.convert(True, "int")[0] is False
    assert engine.convert("yes", "bool") == (True, True)
    assert engine.convert("a,b", "list")[0] is False  # Ansible would split it on commas
    assert engine.convert(True, "str")[0] is False
    assert engine.convert(7, "str") == (True, "7")


def entry_points_run_by(plays):
    """role or role:entry for each role a playbook's plays run (roles:, include_role and import_role)."""
    found = set()
    for play in plays:
        for role in play.get("roles") or []:
            found.add(role["role"] if isinstance(role, dict) else role)
        for task in [
            *(play.get("pre_tasks") or []),
            *(play.get("tasks") or []),
            *(play.get("post_tasks") or []),
        ]:
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                if key in task:
                    entry = task[key].get("tasks_from", "main.yml").removesuffix(".yml")
                    found.add(task[key]["name"] + ("" if entry == "main" else f":{entry}"))
    return found


@pytest.mark.parametrize(
    "playbook",
    sorted(
        p.name
        for p in (ROOT / "playbooks").glob("*.yml")
        if p.name not in ("preflight.yml", "run-unlock.yml")  # plays the targets import
    ),
)
def test_every_playbook_starts_with_the_preflight_of_what_it_runs(playbook):
    """Any target added later too: its playbook's first play is the preflight, naming every role entry point
    the playbook runs, each of which has an argument spec."""
    plays = yaml.safe_load((ROOT / "playbooks" / playbook).read_text())
    first = plays[0]
    assert first.get("ansible.builtin.import_playbook") == "preflight.yml", playbook
    uses = first["vars"]["sdenv_preflight_uses"]
    assert entry_points_run_by(plays[1:]) <= set(uses), playbook
    engine.load_entry_points(documents(), uses)  # each one exists


@pytest.mark.parametrize("bad", [["/home/dummy/outputs"], ["../x"], ["outputs/"], ["a//b"]])
def test_user_data_is_named_relative_to_the_webui_directory(bad):
    sentence = one(uses=["snapshot:rollback"], sdenv_snapshot_user_data=bad)
    assert "sdenv_snapshot_user_data" in sentence and "relative to the WebUI directory" in sentence, sentence


@pytest.mark.parametrize("bad", [["/home/dummy/ComfyUI/output"], ["../user"], ["user/"]])
def test_comfyui_user_data_is_named_relative_to_comfyuis_directory(bad):
    sentence = one(uses=["snapshot:rollback"], sdenv_snapshot_comfyui_user_data=bad)
    assert "sdenv_snapshot_comfyui_user_data" in sentence and "relative to ComfyUI's directory" in sentence


def test_user_data_below_the_webui_directory_passes():
    assert (
        run(uses=["snapshot:rollback"], sdenv_snapshot_user_data=["outputs", "log", "extensions/x/out"]) == []
    )


# --- issue 19 item 5: a token only to its own host, local files only from the bundle directories -------


def test_a_file_url_outside_the_bundle_directories_is_refused_in_one_sentence():
    changed = lock()
    changed["models"][2]["urls"] = ["file:///etc/shadow"]
    sentence = one(sdenv_lock=changed)
    assert sentence == (
        "settings.yml line 1 sets sdenv_lock.models[2].urls[0] to 'file:///etc/shadow': expected a file:// URL"
        " naming a file inside a bundle directory (/var/lib/sdenv/model-bundle, from sdenv_models_bundle_dirs"
        " or BUNDLE=), the only places a model file is read from; or an https:// URL."
    )
    for uses in (["models:pin"], ["models:bundle"]):
        assert sentence in run(uses=uses, sdenv_lock=changed, sdenv_bundle_out="/srv/out")
    # Out by '..', or by percent-encoding it, is still out; a file in a bundle directory or BUNDLE= is fine.
    for url in (
        "file:///var/lib/sdenv/model-bundle/../../../etc/shadow",
        "file:///var/lib/sdenv/model-bundle/%2e%2e/x",
    ):
        changed["models"][2]["urls"] = [url]
        assert "expected a file:// URL naming a file inside a bundle directory" in one(sdenv_lock=changed)
    changed["models"][2]["urls"] = ["file:///var/lib/sdenv/model-bundle/v1-5.safetensors"]
    assert run(sdenv_lock=changed) == []
    changed["models"][2]["urls"] = ["file:///media/usb/bundle/models/v1-5.safetensors"]
    assert run(sdenv_lock=changed, sdenv_bundle="/media/usb/bundle") == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"CIVITAI_TOKEN": ["http://civitai.com"]}, "could be read by anyone on the way: use https"),
        ({"CIVITAI_TOKEN": ["*.civitai.com"]}, "a host name such as civitai.com (https)"),
        ({"CIVITAI_TOKEN": ["https://civitai.com/api"]}, "a host name such as civitai.com (https)"),
        ({"CIVITAI_TOKEN": "civitai.com"}, "a list of which each is"),
        ({"CIVITAI TOKEN": ["civitai.com"]}, "an environment variable name"),
    ],
)
def test_token_hosts_are_origins_a_token_may_safely_go_to(value, words):
    sentence = one(sdenv_models_token_hosts=value)
    assert "sdenv_models_token_hosts" in sentence and words in sentence, sentence
    assert "not shown" not in sentence  # where a token may go is no secret: the bad entry is named
    for uses in (["models:pin"], ["models:bundle"]):
        assert words in " ".join(run(uses=uses, sdenv_models_token_hosts=value, sdenv_bundle_out="/srv/out"))


def test_token_hosts_shipped_default_and_loopback_http():
    assert shipped("settings.yml")["sdenv_models_token_hosts"] == {"CIVITAI_TOKEN": ["civitai.com"]}
    assert run(sdenv_models_token_hosts={"CIVITAI_TOKEN": ["civitai.com", "http://127.0.0.1:8080"]}) == []


# An existing account the provision record does not name is someone's: provision refuses to take it over
# (saying what would change) unless ADOPT=yes; reset-dummy has its own guard (reset_guard).
SOMEONES = {"name": "dummy", "uid": 1001, "home": "/home/dummy", "shell": "/bin/bash", "fullname": "Someone",
            "groups": ["dummy"]}  # fmt: skip


def host_with_the_dummy(entry):
    return dict(
        HOST, accounts=[*ACCOUNTS, SOMEONES], admin_group="sudo",
        dummy_record={"path": "/var/lib/sdenv/state.json", "entry": entry},
    )  # fmt: skip


def test_an_existing_account_is_not_taken_over_unasked():
    sentence = one(host=host_with_the_dummy({}))
    assert sentence.startswith("The account dummy already exists (uid 1001) and the provision record")
    assert (
        "change shell /bin/bash → /bin/zsh; full name 'Someone' → 'Dummy'; groups dummy → dummy,sudo:"
        in sentence
    )
    assert run(host=host_with_the_dummy({}), sdenv_adopt="yes") == []
    assert run(host=host_with_the_dummy({"uid": 1001, "created_by_toolkit": True})) == []
    assert "does not name it" in one(host=host_with_the_dummy({"uid": 1002, "created_by_toolkit": True}))
    # A record the preflight cannot read (an unprivileged login): the role checks again as root.
    assert run(host=host_with_the_dummy(None)) == []
    # Reset and remove do not create or adopt: their own guard speaks.
    assert run(uses=["dummy_user:reset"], host=host_with_the_dummy({})) == []


def test_a_port_in_use_is_named_before_make_run_starts_anything():
    busy = dict(HOST, ports_in_use=[7860])
    sentence = one(uses=["webui:run"], host=busy, sdenv_webui_port=7860)
    assert sentence == (
        "settings.yml line 1 sets sdenv_webui_port to 7860, and another program already listens on port 7860 of"
        " this host: stop it, or set sdenv_webui_port to a free port."
    )
    assert run(uses=["webui:run"], host=dict(HOST, ports_in_use=[]), sdenv_webui_port=7860) == []


def test_a_system_account_by_shell_or_home_is_refused_only_where_accounts_are_made_or_deleted():
    nobody = {"sdenv_user_name": "nobody", "sdenv_user_home": "/nonexistent"}
    for uses in (["dummy_user"], ["dummy_user:reset"], ["dummy_user:remove"]):
        assert "nobody is a system account here (its shell /usr/sbin/nologin refuses logins)" in one(
            uses=uses, **nobody
        )
    # make snapshot only reads the account's files (its tests use accounts whose homes are elsewhere).
    assert run(uses=["snapshot"], sdenv_user_name="svc", sdenv_user_home="/var/lib/svc") == []


def with_places(**places):
    return {**HOST, "places": places}


def test_a_state_directory_reached_through_a_link_is_judged_where_it_resolves():
    host = with_places(**{"/tmp/x/link/state": {"resolved": "/etc/state", "link": None}})
    sentence = one(sdenv_state_dir="/tmp/x/link/state", host=host)
    assert "sdenv_state_dir to '/tmp/x/link/state'" in sentence
    assert "outside /etc, which belongs to the system" in sentence and "resolves to (/etc/state)" in sentence


def test_a_webui_directory_behind_a_link_another_account_can_change_is_refused():
    webui = good_values()["sdenv_webui_dir"]
    host = with_places(**{webui: {"resolved": "/opt/elsewhere", "link": webui}})
    sentence = one(host=host)
    assert f"{webui} is one" in sentence and "follows none" in sentence


def test_a_link_only_root_controls_is_fine_where_it_resolves_to_a_place_of_its_own():
    # macOS: /var is root's link to /private/var.
    host = with_places(**{"/var/db/sdenv": {"resolved": "/private/var/db/sdenv", "link": None}})
    assert run(sdenv_state_dir="/var/db/sdenv", host=host) == []


# --- ComfyUI beside the WebUI (issue 22) ---------------------------------------------------------------


def test_comfyui_is_opt_in_and_passes_with_the_shipped_settings():
    assert shipped("settings.yml")["sdenv_apps"] == ["webui"]
    assert run(sdenv_apps=["webui", "comfyui"]) == []


@pytest.mark.parametrize(
    "apps, words",
    [
        (
            ["webui", "comfy"],
            "sets sdenv_apps[1] to 'comfy': expected one of webui, comfyui, diffusionbee, mochi-diffusion.",
        ),
        (["webui", "webui"], "each app once"),
        (["comfyui"], "expected webui in it"),
        ("comfyui", "expected a list"),
    ],
)
def test_an_unknown_or_incomplete_app_list_is_refused_in_one_sentence(apps, words):
    sentence = one(sdenv_apps=apps)
    assert words in sentence and sentence.count(": ") >= 1


def test_comfyuis_port_must_differ_from_the_webuis():
    sentence = one(sdenv_apps=["webui", "comfyui"], sdenv_comfyui_port=7860)
    assert "sets sdenv_comfyui_port to 7860, the WebUI's port (sdenv_webui_port) too" in sentence
    assert run(sdenv_comfyui_port=7860) == []  # not installed: nothing listens there


def test_comfyui_needs_its_pins_when_chosen():
    pins = lock()
    del pins["comfyui"]
    assert "has no sdenv_lock.comfyui: expected it there, because sdenv_apps names comfyui" in one(
        sdenv_apps=["webui", "comfyui"], sdenv_lock=pins
    )
    assert run(sdenv_lock=pins) == []  # the WebUI alone does not read it
    pins = lock()
    del pins["comfyui_venv"]["torch"]["Linux-x86_64"]
    assert "torchaudio pins for this host's platform Linux-x86_64" in one(
        sdenv_apps=["webui", "comfyui"], sdenv_lock=pins
    )
    pins = lock()
    pins["comfyui"]["commit"] = "v0.3.64"
    assert "sdenv_lock.comfyui.commit" in one(sdenv_lock=pins)


def test_make_run_app_comfyui_checks_comfyuis_port_only():
    busy = dict(HOST, ports_in_use=[8188])
    sentence = one(uses=["comfyui:run"], host=busy)
    assert "sets sdenv_comfyui_port to 8188, and another program already listens on port 8188" in sentence
    assert run(uses=["webui:run"], host=busy) == []
    assert run(uses=["comfyui:run"], host=dict(HOST, ports_in_use=[7860])) == []


@pytest.mark.parametrize("good", [0, 1, 900, "30", 86400 * 7])
def test_a_run_lock_timeout_of_whole_seconds_passes(good):
    assert rules.run_lock_timeout_problem(good, "settings.yml line 22") is None


@pytest.mark.parametrize("bad", [-1, "soon", 1.5, True, None, [900]])
def test_a_bad_run_lock_timeout_is_one_sentence_naming_it(bad):
    """The preflight of a changing target checks it before it waits on it (no role's spec declares it)."""
    sentence = rules.run_lock_timeout_problem(bad, "-e on the command line")
    assert sentence.startswith("-e on the command line sets sdenv_run_lock_timeout to ")
    assert sentence.endswith(
        ": expected a whole number of seconds, 0 or more (0: refuse at once while another run changes this host)."
    )
