"""The sentences a user reads about pending models and unreachable sources, in one place.

Each is an English template passed through `_()` (sdenv_i18n: the catalog in locale/) before it is filled
in, the order gettext needs. Plain
Python (no Ansible), imported by the preflight, the models role's closing list and the verify suite.
"""

import re

try:  # on a host, inside a module's payload (English there: the catalog stays on the controller)
    from ansible.module_utils.sdenv_i18n import _
except ImportError:  # the controller's action plugins, the verify suite and the unit tests
    from sdenv_i18n import _


# --- Pending models (a file the user still has to fetch: no URL, no pin) --------------------------------


def pending_model(name, file, source, bundle_dir):
    return _(
        "{name}: download {file} from {source} into the bundle directory {bundle_dir}, then run"
        " `make pin-models` (it shows name, size and SHA256) and `make pin-models CONFIRM=yes` (it records them)."
    ).format(name=name, file=file, source=source or _("its source page"), bundle_dir=bundle_dir)


def pending_heading(count):
    if count == 1:
        return _("1 model is still to fetch by hand; everything else is in place:")
    return _("{count} models are still to fetch by hand; everything else is in place:").format(count=count)


def pending_in_preflight(names):
    return _(
        "Pending (no URL and no pin in lock.yml, so not fetched): {names}; the run installs everything else"
        " and ends with what to do."
    ).format(names=", ".join(names))


def pending_refused(names):
    return _(
        "STRICT=1 refuses pending models: {names} {verb} no URL and no pinned SHA256 in lock.yml; fetch and pin"
        " {them} first (make provision without STRICT lists the commands), or remove {them} from"
        " sdenv_models_enabled in settings.yml."
    ).format(
        names=", ".join(names),
        verb=_("has") if len(names) == 1 else _("have"),
        them=_("it") if len(names) == 1 else _("them"),
    )


def pending_verify(name, file, source, bundle_dir):
    return _("pending: {what}").format(what=pending_model(name, file, source, bundle_dir))


# --- Sources that cannot be reached (the preflight, before anything changes) ---------------------------


def remedy(mirror_in):
    return _(
        "put a reachable mirror URL in {mirror_in}, give an offline bundle with BUNDLE=dir, or set HTTPS_PROXY"
        ' (and sdenv_ca_bundle for a proxy with its own CA) as README\'s "Behind a proxy" says'
    ).format(mirror_in=mirror_in)


def unreachable(what, url, reason, mirror_in="lock.yml"):
    """mirror_in: where a mirror URL for this source goes (lock.yml; settings.yml for the package index)."""
    return _("{what} at {url} cannot be reached from this host ({reason}): {remedy}.").format(
        what=what, url=url, reason=reason, remedy=remedy(mirror_in)
    )


def commit_not_served(what, url, commit, reason):
    return _(
        "{what} at {url} answers but does not serve the pinned commit {commit} ({reason}): point lock.yml at a"
        " repository that has it (a mirror or fork), or give BUNDLE=dir."
    ).format(what=what, url=url, commit=commit, reason=reason)


def unreachable_heading(count):
    if count == 1:
        return _("1 source this run needs cannot be reached; nothing was changed:")
    return _("{count} sources this run needs cannot be reached; nothing was changed:").format(count=count)


# --- Become (the login user's sudo) ------------------------------------------------------------------------

# What Ansible and sudo say when the login user cannot become root: Ansible's connection plugins raise
# "Missing sudo password" / "Incorrect sudo password" (the become method's name in the middle: su, doas...),
# and sudo itself refuses a user the sudoers file does not name.
_BECOME_NEEDS_PASSWORD = re.compile(r"\bMissing (\S+) password\b|\b(sudo): a password is required\b")
_BECOME_REFUSED = re.compile(
    r"\bIncorrect (\S+) password\b|is not in the (sudo)ers file|is not allowed to run (sudo)\b"
)


def become_failure(message, host, user):
    """The toolkit's sentence for a host whose login user could not become root, or None for any other
    failure (its message then stands as it is)."""
    text = str(message or "")
    found = _BECOME_NEEDS_PASSWORD.search(text)
    if found:
        method = next(group for group in found.groups() if group)
        return _(
            "{host}: the login user {user} cannot become root without a password ({method} asked for one), so"
            " nothing can be checked or changed there; give {user} passwordless {method} on {host} (a line"
            " `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/), or run again with ARGS=--ask-become-pass"
            " to type its password."
        ).format(host=host, user=user, method=method)
    found = _BECOME_REFUSED.search(text)
    if found:
        method = next(group for group in found.groups() if group)
        return _(
            "{host}: the login user {user} may not become root ({method} refused it), so nothing can be"
            " checked or changed there; make {user} an administrator on {host} (the sudo group on Linux, admin"
            " on macOS), or log in as another user (ansible_user in the inventory)."
        ).format(host=host, user=user, method=method)
    return None
