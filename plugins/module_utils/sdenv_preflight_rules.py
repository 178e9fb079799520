"""The preflight's rules, as data: what the argument specs' types cannot say about a value.

Shape, and why: the argument specs (roles/*/meta/argument_specs.yml) stay the one list of which settings a
role entry point uses and of what type; Ansible validates them at role start too. This file adds, per
setting name, one rule object built from a small vocabulary (Path, Pattern, Number, Url, Fields, ListOf,
Nullable, EmptyOr, ...), plus checks across settings (CROSS). Rules are keyed by name and not written into
the argument specs because (1) Ansible's spec format has no place for ranges, patterns or path semantics
(ansible-lint's schema refuses unknown keys there), and (2) the lock is one value shared by two roles whose
inner structure would have to be written out twice as nested spec options.

To add a check: a new setting goes into its role's argument_specs.yml (name, type, description) and gets a
line in RULES (a unit test fails for any spec option without one); a new lock section gets an entry in
LOCK; a rule over several settings or the host goes into CROSS.
"""

import mac_apps
import model_pending
import sdenv_messages as say
from sdenv_preflight import (
    UNKNOWN_PLACE,
    Choice,
    Cross,
    EmptyOr,
    Fields,
    Flag,
    ListOf,
    Nullable,
    Number,
    OneOf,
    Path,
    Pattern,
    Problem,
    Rule,
    Text,
    Url,
    convert,
    home_of_new_account,
    inside,
    is_normal_absolute,
    plain,
    strictly_inside,
)

# What belongs to the operating system: one definition, shared with reset-dummy's allow-list (the
# preflight's caller passes rules.SYSTEM_PATHS).
from sdenv_system_paths import SYSTEM_PATHS  # noqa: F401

# --- Words ---------------------------------------------------------------------------------------------
SHA256 = Pattern(r"[0-9a-f]{64}", "64 lowercase hexadecimal digits (a SHA256)")
COMMIT = Pattern(r"[0-9a-f]{40}", "a full git commit id (40 lowercase hexadecimal digits)")
VERSION = Pattern(r"[0-9][0-9A-Za-z.+!_-]*", "a version number such as 2.1.2")
ENV_NAME = Pattern(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name (letters, digits and _)")
FILE_NAME = Pattern(r"(?!\.\.?$)[^/\x00-\x1f]+", "a file name (no /)")
MODEL_NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a name of letters, digits, '.', '_' and '-'")
# POSIX portable user names, as useradd's default NAME_REGEX and macOS short names allow them.
SHORT_NAME = Pattern(r"[a-z_][a-z0-9_-]{0,31}", "a short account name (a-z, 0-9, _ and -, 1-32, no capitals)")
COMMAND_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9._+-]*", "a command name")
URL = Url()
YES_NO = Choice("yes", "no")
PORT = Number(1024, 65535, expected="a port number from 1024 to 65535 (below 1024 needs root, and the WebUI never runs as root)")  # fmt: skip
COUNT = Number(0, expected="a whole number, 0 or more (0 = no limit)")
SECONDS = Number(1, 86400, expected="a number of seconds from 1 to 86400")
# The WebUI's own limits (v1.10.1 modules/ui.py): sizes 64-2048 in steps of 8, 1-150 sampling steps.
STEPS = Number(1, 150, expected="a number of sampling steps from 1 to 150")
LABEL_WORDS = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (or nothing)"


class ImageSide(Number):
    def __init__(self):
        super().__init__(64, 2048, expected="a size in pixels from 64 to 2048, a multiple of 8")

    def ok(self, value, ctx):
        return super().ok(value, ctx) and int(value) % 8 == 0


class SnapshotLabel(Text):
    """Whatever the snapshot store itself accepts (its validate_label is the one definition)."""

    def __init__(self):
        super().__init__(empty=True, expected=LABEL_WORDS)

    def ok(self, value, ctx):
        from snapshot_store import SnapshotError, validate_label

        try:
            validate_label(value)
        except (SnapshotError, TypeError):
            return False
        return super().ok(value, ctx)  # and one line: the store's pattern lets a trailing newline through


class TokenHost(Rule):
    """An entry of sdenv_models_token_hosts, as the download reads it (token_hosts.parse_entry)."""

    @property
    def expected(self):
        from token_hosts import EXPECTED

        return EXPECTED

    def problems(self, value, ctx, suffix=""):
        from token_hosts import TokenHostError, parse_entry

        try:
            parse_entry(value)
        except TokenHostError as error:
            yield suffix, value, str(error)


EXECUTABLE = Path("file")
_COMPONENT = r"(?!\.\.?(?:/|$))[^/\x00-\x1f]+"
_RELATIVE = f"{_COMPONENT}(?:/{_COMPONENT})*"
RELATIVE_PATH = Pattern(_RELATIVE, "a path relative to the WebUI directory (no leading /, '.', '..' or '//')")
COMFYUI_RELATIVE_PATH = Pattern(
    _RELATIVE, "a path relative to ComfyUI's directory (no leading /, '.', '..' or '//')"
)
IMAGE = Fields(required={"width": ImageSide(), "height": ImageSide(), "steps": STEPS})
# A source archive is checked by the git tree its files reproduce (tree), and by its bytes once recorded.
ARCHIVE = Fields(
    required={
        "url": URL,
        "file": FILE_NAME,
        "tree": Pattern(r"[0-9a-f]{40}", "a git tree id (40 lowercase hexadecimal digits)"),
        "sha256": EmptyOr(SHA256, "while it is not pinned"),
    }
)
PLATFORM = Pattern(r"(Darwin|Linux)-[A-Za-z0-9_]+", "a platform such as Darwin-arm64 or Linux-x86_64")

MODEL = Fields(
    required={
        "name": MODEL_NAME,
        "kind": Choice("checkpoint", "lora"),
        "file": FILE_NAME,
        "sha256": Nullable(SHA256, "until make pin-models records it"),
    },
    optional={
        "urls": ListOf(URL),
        "size": Nullable(Number(1, expected="a number of bytes (a positive whole number)"), "until known"),
        "source": Text(empty=True),
        "trigger_words": ListOf(Text()),
        "token_env": Nullable(ENV_NAME, "when the download needs no token"),
        "allow_ckpt": Flag(),
    },
    what="a model entry",
)

# The apps sdenv_apps may name: webui and comfyui (each a role of that name) and the Mac apps (role mac_apps';
# their names are listed once, in module_utils/mac_apps.py).
APPS = ListOf(
    Choice("webui", "comfyui", *mac_apps.MAC_APP_NAMES),
    unique=lambda name: name if isinstance(name, str) else None,
    unique_words="each app once",
)
# A Mac app as the lock pins it from its Homebrew cask (role mac_apps).
MAC_APP = Fields(
    required={
        "version": VERSION,
        "app": Pattern(r"[^/\x00-\x1f]+\.app", "an app bundle's name (Name.app)"),
        "bundle_id": Pattern(
            r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", "a bundle identifier such as com.example.App"
        ),
        "downloads": Fields(
            other=Fields(
                required={"url": URL, "sha256": SHA256},
                optional={
                    "size": Nullable(
                        Number(1, expected="a number of bytes (a positive whole number)"), "until known"
                    )
                },
            ),
            key=Choice("arm64", "x86_64"),
            what="downloads by architecture",
        ),
    },
    optional={"min_macos": VERSION, "data": ListOf(Text())},
    what="a Mac app entry",
)

# The lock (lock.yml): each section is checked when present; CROSS says which entry points need which.
LOCK = Fields(
    optional={
        "webui": Fields(required={"repo": URL, "commit": COMMIT}, optional={"version": Text()}),
        "repositories": ListOf(
            Fields(
                required={
                    "dir": FILE_NAME,
                    "env": Pattern(
                        r"[A-Z][A-Z0-9_]*", "the launcher's variable prefix (capitals, digits, _)"
                    ),
                    "repo": URL,
                    "commit": COMMIT,
                }
            ),
            unique=lambda entry: entry.get("dir") if isinstance(entry, dict) else None,
            unique_words="a directory no other entry uses",
        ),
        "webui_venv": Fields(
            required={
                "wheel": VERSION,
                "setuptools": VERSION,
                "pip": VERSION,
                "torch": Fields(
                    other=Fields(
                        required={"torch": VERSION, "torchvision": VERSION},
                        optional={"index_url": EmptyOr(URL)},
                    ),
                    key=PLATFORM,
                    what="pins by platform",
                ),
                "clip": ARCHIVE,
                "open_clip": ARCHIVE,
            }
        ),
        # ComfyUI (role comfyui, when sdenv_apps names it): its pin, and its venv's torch trio per platform.
        "comfyui": Fields(required={"repo": URL, "commit": COMMIT}, optional={"version": Text()}),
        "comfyui_venv": Fields(
            required={
                "torch": Fields(
                    other=Fields(
                        required={"torch": VERSION, "torchvision": VERSION, "torchaudio": VERSION},
                        optional={"index_url": EmptyOr(URL)},
                    ),
                    key=PLATFORM,
                    what="pins by platform",
                )
            },
            optional={"requires": ListOf(Text())},
        ),
        "uv": Fields(
            required={
                "version": VERSION,
                "wheels": Fields(
                    other=Fields(
                        required={
                            "file": Pattern(
                                r"uv-[0-9][^/\x00-\x1f]*\.whl", "uv's wheel file name (uv-*.whl)"
                            ),
                            "sha256": SHA256,
                        }
                    ),
                    key=PLATFORM,
                    what="uv's wheels by platform",
                ),
            }
        ),
        "clip_tokenizer": Fields(
            required={
                "repo_id": Pattern(
                    r"[A-Za-z0-9][\w.-]*/[\w.-]+", "a Hugging Face repository id (owner/name)"
                ),
                "revision": COMMIT,
                "sha256": Fields(other=SHA256, key=FILE_NAME, what="SHA256s by file name"),
            }
        ),
        "models": ListOf(
            MODEL,
            unique=lambda entry: entry.get("name") if isinstance(entry, dict) else None,
            unique_words="a name no other entry has",
        ),
        "mac_apps": Fields(other=MAC_APP, key=Choice(*mac_apps.MAC_APP_NAMES), what="Mac apps by name"),
    },
    what="the lock",
)

# --- Rules by setting name ---------------------------------------------------------------------------
# Every option of every argument spec has an entry (tests/unit/test_preflight.py checks it); None means its
# type from the spec says all there is to say.
RULES = {
    # dummy_user
    "sdenv_user_name": SHORT_NAME,
    # A passwd GECOS field / a RealName: no colon or comma (field separators), no newline; short.
    "sdenv_user_fullname": Text(forbid=":,", longest=64),
    "sdenv_user_shell": EXECUTABLE,
    "sdenv_user_password": None,  # checked through its effective value (CROSS: the dummy password)
    "sdenv_user_password_env": ENV_NAME,
    "sdenv_user_home": Path("dummy"),
    "sdenv_state_dir": Path("place"),
    "sdenv_confirm": YES_NO,
    "sdenv_force": YES_NO,
    "sdenv_adopt": YES_NO,
    "sdenv_console_probe_file": Path("file"),
    # homebrew
    "sdenv_homebrew_formulae": ListOf(
        Pattern(r"[a-z0-9][a-z0-9@+._/-]*", "a Homebrew formula name such as python@3.10")
    ),
    "sdenv_homebrew_repo_url": URL,
    "sdenv_linux_packages": ListOf(
        Pattern(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?", "a Debian package name such as python3-venv")
    ),
    "sdenv_user_python_interpreter": EXECUTABLE,
    "sdenv_homebrew_prefix": Path("local"),
    "sdenv_homebrew_repository": Path("local"),
    "sdenv_homebrew_brew": Path("local"),
    "sdenv_state_file": Path("local"),
    "sdenv_login_profile": Path("local"),
    "sdenv_login_profile_lines": ListOf(Text()),
    # python
    "sdenv_python_fallback": EXECUTABLE,
    "sdenv_python_extra_candidates": ListOf(
        OneOf(EXECUTABLE, COMMAND_NAME, expected="an absolute path or a command name")
    ),
    # webui
    "sdenv_lock": LOCK,
    "sdenv_webui_dir": Path("dummy"),
    "sdenv_webui_python": EmptyOr(EXECUTABLE, "for the interpreter role python provides"),
    "sdenv_python": None,  # set by role python during the run
    "sdenv_webui_port": PORT,
    "sdenv_webui_extra_args": ListOf(Text()),
    "sdenv_webui_ui_defaults": Fields(
        required={
            "checkpoint": FILE_NAME,
            "auto_launch_browser": Choice("Disable", "Local", "Remote"),
            "sampler": Text(),
            "scheduler": Text(),
            "steps": STEPS,
            "width": ImageSide(),
            "height": ImageSide(),
        }
    ),
    "sdenv_webui_venv_bootstrap": Flag(),
    "sdenv_webui_pip_index_url": EmptyOr(URL, "for PyPI"),
    "sdenv_webui_wheelhouse": EmptyOr(Path("file"), "to use an index"),
    "sdenv_webui_hf_home": Path("dummy"),
    "sdenv_run_spec": Path("local"),
    "sdenv_webui_venv_lock_dir": Path("local"),
    "sdenv_tools_dir": Path("place"),
    "sdenv_webui_uv_cache_dir": Path("place"),
    # comfyui (and which apps provision installs)
    "sdenv_apps": APPS,
    "sdenv_comfyui_dir": Path("dummy"),
    "sdenv_comfyui_port": PORT,
    "sdenv_comfyui_extra_args": ListOf(Text()),
    "sdenv_model_store": Path("dummy"),
    # offline_bundle (make bundle on the controller; make provision BUNDLE=dir on the host)
    "sdenv_bundle": EmptyOr(Path("file"), "for no bundle"),
    "sdenv_bundle_out": Path("local"),
    "sdenv_bundle_platform": EmptyOr(PLATFORM, "for this machine's platform"),
    # the fleet cache (make provision over several hosts: each byte once, README "A fleet: each byte once")
    "sdenv_fleet_cache": Choice("auto", "always", "never"),
    "sdenv_fleet_cache_dir": Path("local"),
    "sdenv_fleet_cache_host_dir": Path("place"),
    # models
    "sdenv_models_enabled": ListOf(MODEL_NAME),
    "sdenv_models_bundle_dirs": ListOf(Path("place")),
    "sdenv_models_deep": Flag(),
    "sdenv_strict": Flag(),
    "sdenv_proxy": Fields(
        optional={
            "https": EmptyOr(Url(("http", "https")), "to take the controller's HTTPS_PROXY"),
            "http": EmptyOr(Url(("http", "https")), "to take the controller's HTTP_PROXY"),
            "no_proxy": Text(empty=True),
        },
        what="a mapping with https, http and no_proxy",
    ),
    "sdenv_ca_bundle": EmptyOr(Path("file"), "to take the controller's SSL_CERT_FILE"),
    "sdenv_models_tokens": Fields(other=Text(), key=ENV_NAME, what="tokens by environment variable name"),
    "sdenv_models_token_hosts": Fields(
        other=ListOf(TokenHost()), key=ENV_NAME, what="lists of hosts by token variable name"
    ),
    "sdenv_models_state_dir": Path("local"),
    "sdenv_models_stat_cache": Path("local"),
    "sdenv_models_kind_dirs": Fields(other=Path("local"), what="folders by kind"),
    "sdenv_models_pin_names": ListOf(MODEL_NAME),
    "sdenv_models_lock_file": Path("local"),
    # snapshot
    "sdenv_mac_apps_mochi_models_dir": EmptyOr(Path("local"), "to leave Mochi Diffusion's own model folder"),
    "sdenv_mac_apps_dir": Path("dummy"),
    "sdenv_mac_apps_cache_dir": Path("dummy"),
    "sdenv_mac_apps_import_dir": Path("local"),
    "sdenv_snapshot_store": Path("place"),
    "sdenv_snapshot_paths": ListOf(Path("place")),
    "sdenv_snapshot_homebrew": Flag(),
    "sdenv_snapshot_tmutil": Flag(),
    "sdenv_snapshot_retention": Fields(
        required={
            "keep_last": COUNT,
            "keep_hourly_hours": COUNT,
            "keep_daily_days": COUNT,
            "keep_weekly_weeks": COUNT,
        }
    ),
    "sdenv_snapshot_known_good": Flag(),
    "sdenv_snapshot_label": SnapshotLabel(),
    "sdenv_snapshot_kind": None,  # choices in the spec
    "sdenv_snapshot_pinned": Flag(),
    "sdenv_snapshot_to": Text(),  # which ids exist is the store's to say (make rollback names them)
    "sdenv_snapshot_only_paths": ListOf(Path("local")),
    "sdenv_snapshot_deep": Flag(),
    "sdenv_snapshot_user_data": ListOf(RELATIVE_PATH),
    "sdenv_snapshot_comfyui_user_data": ListOf(COMFYUI_RELATIVE_PATH),
    "sdenv_snapshot_json_file": EmptyOr(Path("local"), "for the table"),
    # make verify (tests/verify/argument_specs.yml)
    "sdenv_verify_out": Path("local"),
    "sdenv_verify_prompt": Text(),
    "sdenv_verify_image": Fields(
        required={"width": ImageSide(), "height": ImageSide(), "steps": STEPS},
        optional={"seed": Number(-1, 4294967295), "cfg_scale": Number(1, 30, whole=False)},
    ),
    "sdenv_verify_small": Flag(),
    "sdenv_verify_small_image": IMAGE,
    "sdenv_verify_ready_timeout": SECONDS,
    "sdenv_verify_generate_timeout": SECONDS,
    "sdenv_verify_live_args": ListOf(Text()),
    "sdenv_verify_probe": ListOf(Text()),
}

# Values that are no argument of any entry point but that a check below reads (role defaults).
EXTRA_VALUES = (
    "sdenv_user_password_value",
    "sdenv_webui_platform",
    # where the host keeps what a fetch gave it: the reachability check skips those sources (sdenv_reach)
    "sdenv_webui_archive_dir",
    "sdenv_webui_venv_dir",
)

# How long a changing target waits for another run's lock (settings.yml; no role reads it, so no argument spec
# declares it: the preflight checks it itself when it takes the lock). 0 refuses at once, as a test does.
RUN_LOCK_TIMEOUT = Number(
    0, expected="a whole number of seconds, 0 or more (0: refuse at once while another run changes this host)"
)


def run_lock_timeout_problem(value, origin):
    """The sentence for a bad sdenv_run_lock_timeout (origin: where it was set, in words), or None."""
    if RUN_LOCK_TIMEOUT.ok(value, None):
        return None
    return Problem("sdenv_run_lock_timeout", value, RUN_LOCK_TIMEOUT.expected, origin).sentence()


# What make hands to Ansible, for naming where a value came from: a setting given on the command line
# (-e) or through the environment by one of these make variables is named by the make variable.
MAKE_VARIABLES = {
    "sdenv_confirm": "CONFIRM",
    "sdenv_force": "FORCE",
    "sdenv_strict": "STRICT",
    "sdenv_adopt": "ADOPT",
    "sdenv_snapshot_label": "LABEL",
    "sdenv_snapshot_to": "TO",
    "sdenv_snapshot_only_paths": "PATHS",
    "sdenv_snapshot_deep": "DEEP",
    "sdenv_models_pin_names": "MODELS",
    "sdenv_bundle": "BUNDLE",
    "sdenv_bundle_out": "OUT",
    "sdenv_bundle_platform": "PLATFORM",
    "sdenv_fleet_cache": "FLEET_CACHE",
}

# Which lock sections each entry point reads.
LOCK_SECTIONS = {
    "webui:main": ("webui", "repositories", "webui_venv", "uv", "clip_tokenizer"),
    "offline_bundle:bundle_checks": ("webui", "repositories", "webui_venv", "uv", "clip_tokenizer"),
    "models:main": ("models",),
    "models:bundle": ("models",),
    "models:pin": ("models",),
    "mac_apps:main": ("mac_apps",),
}


# --- Checks across settings and the host ---------------------------------------------------------------


def dummy_is_a_regular_account(ctx):
    name = ctx.user_name
    account = ctx.account(name)
    if name == "root" or (account and account["uid"] == 0):
        yield Problem("sdenv_user_name", name, "the name of the dummy account, never root (uid 0)")
    elif account and account["uid"] < ctx.first_regular_uid:
        yield Problem(
            "sdenv_user_name",
            name,
            f"the name of a regular account or of a new one; {name} is a system account here (uid"
            f" {account['uid']}, below {ctx.first_regular_uid})",
        )


def system_account_reason(account, roots):
    from dummy_accounts import system_account_reason as reason  # the module's own rule: one definition

    return reason(account, roots)


def dummy_is_a_persons_account(ctx):
    # Only where the account is made, taken over or deleted: the snapshot and run targets merely use it.
    name = ctx.user_name
    account = ctx.account(name)
    reason = account and system_account_reason(account, people_home_roots(ctx.host))
    if reason and account["uid"] != 0 and account["uid"] >= ctx.first_regular_uid:
        yield Problem(
            "sdenv_user_name",
            name,
            f"the name of a regular account or of a new one; {name} is a system account here ({reason}),"
            " whatever ADOPT says",
        )


def people_home_roots(host):
    """Where people's homes live on this host (dummy_accounts' people_home_roots, from the probe)."""
    from removal_allowlist import HOME_ROOTS

    roots = HOME_ROOTS["Darwin" if host.get("system") == "Darwin" else "Linux"]
    return (*roots, *([host["home_root"]] if host.get("home_root") else []))


def existing_account_is_not_taken_over(ctx):
    # The module's own rules (dummy_accounts): one definition, checked here before any change, where the
    # record is readable (the role checks again as root in any case).
    from dummy_accounts import takeover_changes, takeover_refusal

    name, record = ctx.user_name, ctx.host.get("dummy_record")
    account = ctx.account(name)
    if not account or not record or record.get("entry") is None or "sdenv_user_name" in ctx.failed:
        return
    adopt = convert(ctx.values.get("sdenv_adopt", "no"), "bool")[1]
    changes = takeover_changes(
        account,
        ctx.values["sdenv_user_fullname"],
        ctx.values["sdenv_user_shell"],
        ctx.host.get("admin_group"),
    )
    refusal = takeover_refusal(name, account, record["entry"] or None, changes, adopt, record["path"])
    if refusal:
        yield Problem("sdenv_user_name", name, "", text=refusal)


# The ports a target listens on (make run's WebUI), and the entry points that do: checked free on the host.
# Provision only prepares the WebUI (launch.py --exit, no listening); make verify LIVE=1 picks a free port.
PORTS = ("sdenv_webui_port", "sdenv_comfyui_port")
PORT_USERS = {"webui:run", "comfyui:run"}


def ports_are_free(ctx, settings=PORTS):
    for setting in settings:
        port = ctx.values.get(setting)
        if port in ctx.host.get("ports_in_use", []):
            yield Problem(
                setting,
                port,
                "",
                text=f"{ctx.origin_of(setting) or UNKNOWN_PLACE} sets {setting} to {port}, and another program already"
                f" listens on port {port} of this host: stop it, or set {setting} to a free port.",
            )


def home_is_the_accounts(ctx):
    home, name = ctx.values["sdenv_user_home"], ctx.user_name
    account = ctx.account(name)
    expected = (
        account["home"]
        if account
        else home_of_new_account(name, ctx.host.get("system"), ctx.host.get("home_root"))
    )
    if home != expected:
        how = "the account has" if account else "the system gives a new account"
        yield Problem(
            "sdenv_user_home", home, f"{expected}, the home {how} here (the toolkit does not choose it)"
        )


def dummy_password_is_usable(ctx):
    # The module's own rule (dummy_accounts.check_password): one definition, checked here before any change.
    from dummy_accounts import AccountError, check_password

    password = ctx.values.get("sdenv_user_password_value")
    if not isinstance(password, str) or not password:
        return  # empty: the role generates one
    try:
        check_password(password)
    except AccountError as error:
        where = ctx.origin_of("sdenv_user_password_value") or "the vault or the environment"
        yield Problem("sdenv_user_password", None, "", text=f"{str(error)[:-1]} (the password from {where}).")


def not_in_the_lock(setting, wanted, lock, shown=None):
    """A Problem when names in `wanted` are not entries of the lock's models, else None."""
    names = [m.get("name") for m in lock.get("models") or [] if isinstance(m, dict)]
    unknown = [name for name in wanted if name not in names]
    if not unknown:
        return None
    return Problem(
        setting,
        wanted if shown is None else shown,
        f"names the lock lists in sdenv_lock.models ({', '.join(map(str, names)) or 'none'}); it has no "
        + ", ".join(map(str, unknown)),
    )


def models_are_in_the_lock(ctx):
    enabled, lock = ctx.values["sdenv_models_enabled"], ctx.values["sdenv_lock"]
    unknown = not_in_the_lock("sdenv_models_enabled", enabled, lock)
    if unknown:
        yield unknown
        return
    models = lock.get("models") or []
    # An entry make pin-models can fetch (it has URLs) must be pinned before provision installs it; one with
    # neither URL nor pin is pending: the run installs everything else and lists it at the end (STRICT=1 for
    # CI makes it a refusal).
    unpinned = [m["name"] for m in model_pending.enabled(models, enabled) if model_pending.needs_pin(m)]
    if unpinned:
        # The sentence README's "First run" quotes.
        one = len(unpinned) == 1
        yield Problem(
            "sdenv_lock.models",
            None,
            "",
            text=f"{', '.join(unpinned)} {'has' if one else 'have'} no pinned SHA256 in lock.yml: run `make pin-models`"
            " to download and show name, size, SHA256 and source, then `make pin-models CONFIRM=yes` to record"
            f" them; or remove {'it' if one else 'them'} from sdenv_models_enabled in settings.yml.",
        )
    pending = [m["name"] for m in model_pending.enabled(models, enabled) if model_pending.is_pending(m)]
    if pending and convert(ctx.values.get("sdenv_strict", False), "bool")[1]:
        yield Problem("sdenv_strict", None, "", text=say.pending_refused(pending))


def model_files_are_in_a_bundle(ctx):
    """A lock's file:// URL names a file inside a bundle directory (sdenv_models_bundle_dirs, or BUNDLE='s
    models/), the only local places a model is read from: file:///etc/shadow would otherwise be copied,
    fail its SHA256 and be kept for inspection. The download refuses it too (model_download)."""
    from urllib.parse import unquote, urlsplit

    bundles = [d for d in ctx.values["sdenv_models_bundle_dirs"] if isinstance(d, str)]
    bundle = ctx.values.get("sdenv_bundle")
    if isinstance(bundle, str) and bundle:
        bundles.append(bundle.rstrip("/") + "/models")
    for index, entry in enumerate(ctx.values["sdenv_lock"].get("models") or []):
        urls = entry.get("urls") if isinstance(entry, dict) else None
        for number, url in enumerate(urls if isinstance(urls, list) else []):
            if not (isinstance(url, str) and url.startswith("file:")):
                continue
            path = unquote(urlsplit(url).path)
            if is_normal_absolute(path) and any(strictly_inside(path, d) for d in bundles):
                continue
            yield Problem(
                f"sdenv_lock.models[{index}].urls[{number}]",
                url,
                f"a file:// URL naming a file inside a bundle directory ({', '.join(bundles) or 'none'}, from"
                " sdenv_models_bundle_dirs or BUNDLE=), the only places a model file is read from; or an"
                " https:// URL",
            )


def pin_names_are_in_the_lock(ctx):
    wanted = ctx.values["sdenv_models_pin_names"]
    unknown = not_in_the_lock(
        "sdenv_models_pin_names", wanted, ctx.values["sdenv_lock"], " ".join(map(str, wanted))
    )
    if unknown:
        yield unknown


def lock_has_what_the_target_reads(ctx):
    lock = ctx.values["sdenv_lock"]
    for entry_point, sections in LOCK_SECTIONS.items():
        if entry_point not in ctx.uses:
            continue
        for section in sections:
            if section not in lock:
                yield Problem(
                    "sdenv_lock",
                    None,
                    "",
                    text=f"{ctx.origin_of('sdenv_lock') or 'The lock'} has no sdenv_lock.{section}: expected it"
                    f" there, because {entry_point.replace(':main', '')} reads it (see the lock.yml this toolkit ships).",
                )


def venv_is_pinned_for_this_host(ctx):
    """The venv is built on this host: torch and uv must be pinned for its platform."""
    if ctx.values.get("sdenv_webui_venv_bootstrap") not in (True, "true", "yes", "True"):
        return
    lock, platform = ctx.values["sdenv_lock"], ctx.values.get("sdenv_webui_platform")
    torch = (lock.get("webui_venv") or {}).get("torch") or {}
    if platform not in torch:
        yield Problem(
            "sdenv_lock.webui_venv.torch",
            plain(sorted(torch)),
            f"torch and torchvision pins for this host's platform {platform} as well",
        )
        return  # a platform the lock does not know at all: one sentence is enough
    uv_wheels = (lock.get("uv") or {}).get("wheels") or {}
    if "uv" in lock and platform not in uv_wheels:
        yield Problem(
            "sdenv_lock.uv.wheels",
            plain(sorted(uv_wheels)),
            f"uv's wheel for this host's platform {platform} as well (file and sha256, from PyPI's uv release)",
        )


def apps_fit_together(ctx):
    """ComfyUI comes beside the WebUI: the WebUI stays in the list, ComfyUI's port is not the WebUI's, and the
    lock pins ComfyUI (its commit, and its venv's torch for this host's platform)."""
    apps = ctx.values["sdenv_apps"]
    if not isinstance(apps, (list, tuple)) or "sdenv_apps" in ctx.failed:
        return
    where = ctx.origin_of("sdenv_apps") or UNKNOWN_PLACE
    if "webui" not in apps:
        yield Problem(
            "sdenv_apps",
            None,
            "",
            text=f"{where} sets sdenv_apps to {plain(list(apps))}: expected webui in it (the guide's WebUI is the"
            " base the other apps are installed beside): add webui to the list.",
        )
    if "comfyui" not in apps:
        return
    webui, comfyui = ctx.values.get("sdenv_webui_port"), ctx.values.get("sdenv_comfyui_port")
    if webui == comfyui and "sdenv_comfyui_port" not in ctx.failed:
        yield Problem(
            "sdenv_comfyui_port",
            None,
            "",
            text=f"{ctx.origin_of('sdenv_comfyui_port') or UNKNOWN_PLACE} sets sdenv_comfyui_port to {comfyui},"
            f" the WebUI's port (sdenv_webui_port) too: expected another port, so both apps can run at once:"
            " set sdenv_comfyui_port to a free one (ComfyUI's own default is 8188).",
        )
    lock = ctx.values["sdenv_lock"]
    for section in ("comfyui", "comfyui_venv"):
        if section not in lock:
            yield Problem(
                "sdenv_lock",
                None,
                "",
                text=f"{ctx.origin_of('sdenv_lock') or 'The lock'} has no sdenv_lock.{section}: expected it there,"
                " because sdenv_apps names comfyui (see the lock.yml this toolkit ships).",
            )
            return
    platform = ctx.values.get("sdenv_webui_platform")
    torch = (lock["comfyui_venv"] or {}).get("torch") or {}
    if platform and platform not in torch:
        yield Problem(
            "sdenv_lock.comfyui_venv.torch",
            plain(sorted(torch)),
            f"torch, torchvision and torchaudio pins for this host's platform {platform} as well",
        )


# Settings whose directory the dummy owns (it could replace anything below them).
DUMMY_PLACES = (
    "sdenv_user_home",
    "sdenv_webui_dir",
    "sdenv_webui_hf_home",
    "sdenv_model_store",
    "sdenv_comfyui_dir",
)
# The apps' own folders: the model store lies apart from each, so deleting an app's folder never deletes a
# model, and no app's tree is inside the store.
APP_DIRS = ("sdenv_webui_dir", "sdenv_comfyui_dir")


def places_are_apart(ctx):
    """The state directory and the snapshot store hold what the dummy must not change and what a rollback
    must not overwrite: no other path setting is them or above them, and neither lies in a directory the
    dummy owns or a snapshot captures."""
    values = ctx.values

    def paths(name):
        if name in ctx.failed or name not in ctx.options or values.get(name) is None:
            return []
        return [
            (suffix, path)
            for suffix, path in Path.in_value(RULES.get(name), values[name])
            if is_normal_absolute(path)
        ]

    state_dir = values["sdenv_state_dir"]
    for name in RULES:
        if name == "sdenv_state_dir":
            continue
        for suffix, path in paths(name):
            if inside(state_dir, path):
                if name in DUMMY_PLACES:
                    yield Problem(
                        "sdenv_state_dir",
                        state_dir,
                        f"the state directory outside {path} ({name}), which the dummy owns",
                    )
                else:
                    yield Problem(
                        name + suffix,
                        path,
                        f"a path that is neither the state directory {state_dir} nor a directory above it",
                    )
                return

    captured = [path for _, path in paths("sdenv_snapshot_paths")]
    store = dict(paths("sdenv_snapshot_store")).get("")
    if store:
        for name in DUMMY_PLACES:
            for _, place in paths(name):
                if inside(store, place):
                    yield Problem(
                        "sdenv_snapshot_store",
                        store,
                        f"the snapshot store outside {place} ({name}), which the dummy owns",
                    )
                    return
    for name, path in (("sdenv_state_dir", state_dir), ("sdenv_snapshot_store", store)):
        for root in captured if path else ():
            if inside(path, root) or (name == "sdenv_snapshot_store" and inside(root, path)):
                what = "the state directory" if name == "sdenv_state_dir" else "the snapshot store"
                yield Problem(
                    name, path, f"{what} apart from {root}, which snapshots capture (sdenv_snapshot_paths)"
                )
                return


def store_is_apart_from_the_apps(ctx):
    """The model store is neither inside an app's folder nor above one (module_utils/model_store.py)."""
    store = ctx.values.get("sdenv_model_store")
    if "sdenv_model_store" in ctx.failed or not is_normal_absolute(store):
        return
    for name in APP_DIRS:
        app = ctx.values.get(name)
        if name in ctx.failed or not is_normal_absolute(app):
            continue
        if inside(store, app) or inside(app, store):
            yield Problem(
                "sdenv_model_store",
                store,
                f"a directory apart from {app} ({name}): deleting an app's folder must never delete a model,"
                " and an app's tree is no place for the store (the default is ~/sd-models)",
            )
            return


# Directories root writes in whose real place on the host the preflight judges (action sdenv_preflight asks
# the host where they resolve to, walking them as sdenv_atomic's writes do).
RESOLVED_PLACES = ("sdenv_state_dir", "sdenv_webui_dir")


def places_reach_no_links(ctx, name):
    """The path a setting names reaches no link another account can change (the roles would refuse it
    halfway through a run), and where it really resolves is judged as the path itself is: /tmp/x/link/state
    with link -> /etc is /etc/state."""
    value, place = ctx.values.get(name), ctx.host.get("places", {}).get(ctx.values.get(name))
    if name in ctx.failed or not isinstance(value, str) or not place:
        return
    if place.get("link"):
        yield Problem(
            name,
            value,
            f"a path with no symbolic link another account can change; {place['link']} is one, and the toolkit"
            " (as root) follows none: name the real directory, or make that link a directory",
        )
        return
    resolved = place.get("resolved")
    if isinstance(resolved, str) and resolved != value:
        reason = RULES[name].reason(resolved, ctx)
        if reason:
            yield Problem(
                name, value, f"{reason[0].lower()}{reason[1:]}, judged where it resolves to ({resolved})"
            )


def mac_apps_need_a_mac(ctx):
    """A Mac app in sdenv_apps: only on macOS, and pinned in the lock (role mac_apps' names, one list)."""
    apps = ctx.values["sdenv_apps"]
    where = f"sdenv_apps ({ctx.origin_of('sdenv_apps') or UNKNOWN_PLACE})"
    refusal = mac_apps.platform_refusal(apps, ctx.host.get("system"), where)
    if refusal:
        yield Problem("sdenv_apps", None, "", text=refusal)
        return
    pinned = ctx.values["sdenv_lock"].get("mac_apps") or {}
    missing = [name for name in mac_apps.mac_apps_in(apps) if name not in pinned]
    if missing:
        yield Problem(
            "sdenv_apps",
            None,
            "",
            text=f"{where} asks for {', '.join(missing)}, which sdenv_lock.mac_apps does not pin: add its cask's"
            " version, app, bundle_id and downloads (url, sha256) there, or remove it from sdenv_apps.",
        )
        return
    # An offline provision (BUNDLE=) fetches nothing, and make bundle does not carry the apps' disk images.
    bundle = ctx.values.get("sdenv_bundle")
    wanted = mac_apps.mac_apps_in(apps)
    if isinstance(bundle, str) and bundle and wanted:
        one = len(wanted) == 1
        yield Problem(
            "sdenv_apps",
            None,
            "",
            text=f"{where} asks for {' and '.join(wanted)}, whose disk {'image' if one else 'images'} the bundle"
            f" {bundle} does not carry (make bundle leaves the Mac apps out): provision without BUNDLE= to"
            f" download {'it from its pinned cask' if one else 'them from their pinned casks'}, or remove"
            f" {'it' if one else 'them'} from sdenv_apps for the offline run.",
        )
        return
    # The casks' own limits (Mochi Diffusion has no Intel build, both need a recent macOS): said here, before
    # the roles that come first have changed the host, rather than by the module at the end.
    facts = ctx.host.get("facts") or {}
    if not facts.get("architecture"):
        return
    for name in mac_apps.mac_apps_in(apps):
        try:
            mac_apps.download_for(
                name, pinned[name], facts["architecture"], facts.get("distribution_version")
            )
        except mac_apps.MacAppError as exc:
            yield Problem("sdenv_apps", None, "", text=f"{where} asks for {name}, but {exc}")


def host_is_supported(ctx):
    system, family = ctx.host.get("system"), ctx.host.get("os_family")
    if system != "Darwin" and family != "Debian":
        yield Problem(
            "inventory",
            None,
            "",
            text=f"This host runs {ctx.host.get('distribution') or system} ({family or system}), but the toolkit"
            " provisions macOS and Debian/Ubuntu only: remove it from the inventory or leave it out with LIMIT.",
        )


CROSS = [
    Cross("the dummy is a regular account", ["sdenv_user_name"], dummy_is_a_regular_account),
    Cross(
        "the dummy is a person's account",
        ["sdenv_user_name"],
        dummy_is_a_persons_account,
        ["dummy_user:main", "dummy_user:reset", "dummy_user:remove"],
    ),
    Cross("the dummy's home is its account's", ["sdenv_user_name", "sdenv_user_home"], home_is_the_accounts),
    Cross(
        "an existing account is never taken over unasked",
        ["sdenv_user_name", "sdenv_user_fullname", "sdenv_user_shell"],
        existing_account_is_not_taken_over,
        ["dummy_user:main"],
    ),
    Cross("the dummy password", ["sdenv_user_password_env"], dummy_password_is_usable, ["dummy_user:main"]),
    # One check per port: a Cross runs only when the target uses every setting it reads.
    *(
        Cross(
            f"the port {name} is free",
            [name],
            lambda ctx, name=name: ports_are_free(ctx, [name]),
            sorted(PORT_USERS),
        )
        for name in PORTS
    ),
    Cross("the host's platform", ["sdenv_homebrew_formulae"], host_is_supported, ["homebrew:main"]),
    Cross("Mac apps on a Mac", ["sdenv_apps", "sdenv_lock"], mac_apps_need_a_mac, ["mac_apps:main"]),
    Cross("the lock's sections", ["sdenv_lock"], lock_has_what_the_target_reads),
    Cross(
        "enabled models",
        ["sdenv_models_enabled", "sdenv_lock"],
        models_are_in_the_lock,
        ["models:main", "models:bundle"],
    ),
    Cross(
        "model files from the bundle directories only",
        ["sdenv_lock", "sdenv_models_bundle_dirs"],
        model_files_are_in_a_bundle,
        ["models:main", "models:bundle", "models:pin"],
    ),
    Cross(
        "models to pin", ["sdenv_models_pin_names", "sdenv_lock"], pin_names_are_in_the_lock, ["models:pin"]
    ),
    Cross(
        "torch and uv pins",
        ["sdenv_lock", "sdenv_webui_venv_bootstrap"],
        venv_is_pinned_for_this_host,
        ["webui:main"],
    ),
    Cross(
        "the apps fit together",
        ["sdenv_apps", "sdenv_comfyui_port", "sdenv_webui_port", "sdenv_lock"],
        apps_fit_together,
        ["comfyui:main"],
    ),
    Cross("places apart", ["sdenv_state_dir"], places_are_apart),
    Cross(
        "the model store apart from the apps",
        ["sdenv_model_store", "sdenv_webui_dir"],
        store_is_apart_from_the_apps,
    ),
    *(
        Cross(f"where {name} resolves", [name], lambda ctx, name=name: places_reach_no_links(ctx, name))
        for name in RESOLVED_PLACES
    ),
]
