"""Homebrew on macOS: where it lives, the command lines the role runs, and parsing brew's output.

Plain Python (stdlib, Python >= 3.9 because it runs on the Mac's own Python) so unit tests check it
against recorded `brew` outputs. A `run(argv, environ) -> (rc, out, err)` callable runs commands:
AnsibleModule.run_command in the module, a recorder in tests.
"""

import os

# Homebrew's prefixes and its own entries in /usr/local are defined once, beside what reset may delete.
try:
    from ansible.module_utils import removal_allowlist
except ImportError:  # unit tests import module_utils directly
    import removal_allowlist

ARM64_PREFIX = removal_allowlist.HOMEBREW_ARM64_PREFIX
INTEL_PREFIX = removal_allowlist.HOMEBREW_INTEL_PREFIX
INTEL_OWN_PATHS = removal_allowlist.HOMEBREW_INTEL_OWN_PATHS

# The directories Homebrew keeps in its prefix (the geerlingguy.mac role creates the same ones before
# cloning), made owned by the brew user so that brew, running as that user, can write and link there.
PREFIX_DIRECTORIES = (
    "Cellar", "Caskroom", "Frameworks", "Homebrew", "bin", "etc", "include", "lib", "opt", "sbin",
    "share", "share/zsh", "share/zsh/site-functions", "var", "var/homebrew", "var/homebrew/linked",
)  # fmt: skip

# brew must not stop to ask, update itself mid-run, or phone home; cleanup would delete old versions a
# snapshot may still refer to.
BREW_ENVIRONMENT = {
    "NONINTERACTIVE": "1",
    "HOMEBREW_NO_AUTO_UPDATE": "1",
    "HOMEBREW_NO_ANALYTICS": "1",
    "HOMEBREW_NO_ENV_HINTS": "1",
    "HOMEBREW_NO_INSTALL_CLEANUP": "1",
    "HOMEBREW_NO_INSTALLED_DEPENDENTS_CHECK": "1",
}


class HomebrewError(Exception):
    """A step that failed; the message is one sentence saying what and what to do."""


def prefix_for_architecture(architecture):
    """Homebrew's default prefix for an `ansible_facts['architecture']` value."""
    return ARM64_PREFIX if architecture in ("arm64", "aarch64") else INTEL_PREFIX


def repository_for_prefix(prefix):
    """Where the Homebrew/brew git checkout goes: the prefix itself, except /usr/local/Homebrew on Intel."""
    return os.path.join(prefix, "Homebrew") if prefix == INTEL_PREFIX else prefix


def shellenv_line(prefix):
    """The guide's ~/.zprofile line, for this prefix."""
    return f'eval "$({prefix}/bin/brew shellenv)"'


def prefix_directories(prefix, before_clone=False):
    """Directories to create, owned by the brew user, for this prefix.

    Where the prefix is also the brew repository (Apple Silicon), git clones only into an empty directory:
    before the clone only the prefix itself is made, the others after it (as geerlingguy.mac does). Its
    `Homebrew` directory exists only on Intel, where it is the repository (/usr/local/Homebrew).
    """
    if prefix == INTEL_PREFIX:
        return [os.path.join(prefix, name) for name in PREFIX_DIRECTORIES]
    if before_clone:
        return [prefix]
    return [prefix] + [os.path.join(prefix, name) for name in PREFIX_DIRECTORIES if name != "Homebrew"]


def created_paths_for(prefix, existing):
    """Paths reset-dummy may remove after the toolkit installed Homebrew into `prefix`.

    `existing` is the set of the prefix's Homebrew directories that existed before the install (made by
    something else). Apple Silicon: the whole prefix, which Homebrew owns alone. Intel: only Homebrew's
    own top-level directories the install made, plus the brew link in bin/ (never /usr/local itself or
    a directory it shares with other software).
    """
    if prefix != INTEL_PREFIX:
        return [prefix]
    paths = [os.path.join(prefix, name) for name in INTEL_OWN_PATHS]
    return [path for path in paths if path not in existing]


def install_argv(brew, formulae):
    return [brew, "install", "--formula", *formulae]


def list_versions_argv(brew):
    return [brew, "list", "--formula", "--versions"]


def formula_key(name):
    """A formula as `brew list` names it: `homebrew/core/python@3.10` is listed as `python@3.10`."""
    return name.strip().rsplit("/", 1)[-1]


def parse_list_versions(text):
    """`brew list --formula --versions` -> {formula: [versions...]}.

    One line per installed formula: the name, then each installed version (several when old ones were
    kept), e.g. `python@3.10 3.10.14_1`.
    """
    installed = {}
    for line in text.splitlines():
        fields = line.split()
        if fields:
            installed[fields[0]] = fields[1:]
    return installed


def missing_formulae(wanted, installed):
    """The wanted formulae not installed yet, in the order given, without repeats."""
    missing = []
    for name in wanted:
        if formula_key(name) not in installed and name not in missing:
            missing.append(name)
    return missing


def recorded_versions(wanted, installed):
    """{formula: version} for the record: the newest listed version (brew lists them oldest first)."""
    versions = {}
    for name in wanted:
        found = installed.get(formula_key(name))
        if not found:
            raise HomebrewError(
                f"The formula {name} is not listed by `brew list` after installing it: use the formula's"
                f" canonical name (see `brew info {name}`) in sdenv_homebrew_formulae."
            )
        versions[formula_key(name)] = found[-1]
    return versions


def ensure_formulae(run, brew, wanted, check_mode=False):
    """Install the missing formulae; return (changed, installed_now, {formula: version})."""
    rc, out, err = run(list_versions_argv(brew), BREW_ENVIRONMENT)
    if rc != 0:
        raise HomebrewError(
            f"`brew list` failed (exit {rc}): {last_line(err or out)}; run `brew doctor` as the dummy user."
        )
    installed = parse_list_versions(out)
    missing = missing_formulae(wanted, installed)
    if not missing:
        return False, [], recorded_versions(wanted, installed)
    if check_mode:
        return (
            True,
            missing,
            {formula_key(n): installed[formula_key(n)][-1] for n in wanted if n not in missing},
        )
    rc, out, err = run(install_argv(brew, missing), BREW_ENVIRONMENT)
    if rc != 0:
        raise HomebrewError(
            f"`brew install {' '.join(missing)}` failed (exit {rc}): {last_line(err or out)}."
        )
    rc, out, err = run(list_versions_argv(brew), BREW_ENVIRONMENT)
    if rc != 0:
        raise HomebrewError(f"`brew list` failed after installing (exit {rc}): {last_line(err or out)}.")
    return True, missing, recorded_versions(wanted, parse_list_versions(out))


def last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
