"""Which enabled models are pending: the user must still fetch the file by hand (the lock gives no URL and
no SHA256), so provision installs everything else, never fetches them, and ends with what to do.

An entry with URLs but no SHA256 is not pending: `make pin-models` can fetch it, and the preflight refuses it
with the pin-models sentence. Plain Python, shared by the preflight, the models role and make verify.
"""

try:
    from ansible.module_utils import sdenv_messages as say
except ImportError:  # the controller, make verify and the unit tests import the directory directly
    import sdenv_messages as say


def is_pending(model):
    return isinstance(model, dict) and not model.get("sha256") and not model.get("urls")


def needs_pin(model):
    return isinstance(model, dict) and not model.get("sha256") and bool(model.get("urls"))


def enabled(models, names):
    return [m for m in models or [] if isinstance(m, dict) and m.get("name") in (names or [])]


def pending(models, names, bundle_dirs):
    """[{name, file, source, bundle_dir, todo}] for the enabled pending models; `todo` is the sentence."""
    bundle_dir = (bundle_dirs or ["(settings.yml sdenv_models_bundle_dirs is empty)"])[0]
    found = []
    for model in enabled(models, names):
        if is_pending(model):
            name, file, source = model.get("name"), model.get("file"), model.get("source") or ""
            found.append(
                {
                    "name": name,
                    "file": file,
                    "source": source,
                    "bundle_dir": bundle_dir,
                    "todo": say.pending_model(name, file, source, bundle_dir),
                }
            )
    return found


def closing_list(found):
    """The lines the run ends with: a heading, then one sentence per pending model."""
    return [say.pending_heading(len(found)), *(entry["todo"] for entry in found)] if found else []
