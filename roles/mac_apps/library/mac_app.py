#!/usr/bin/python
# Thin Ansible wrapper: the logic is in plugins/module_utils/mac_apps.py (unit-tested without Ansible).
"""Ansible module: one Mac app of the lock, pinned by its cask's url and sha256, in the dummy's ~/Applications."""

DOCUMENTATION = r"""
module: mac_app
short_description: Install one Mac app pinned by its Homebrew cask's url and sha256
description:
  - Leaves an app whose Info.plist has the pinned CFBundleIdentifier and CFBundleShortVersionString alone.
  - Otherwise downloads the lock's url for this Mac's architecture (model_download's checks - resume, free
    space, size, SHA256; other bytes are kept in I(cache_dir)/rejected and never unpacked), attaches the disk
    image read-only and unbrowsed at a mount point of its own (or unzips a .zip), copies the .app out with
    ditto to a staging name, checks its bundle id and version, renames it into place and detaches.
  - Refuses an app at the same path that the toolkit did not install and that is not the pinned version.
  - Runs as the dummy (C(become_user)); refuses to run as root, so every file it writes is the dummy's.
  - For Mochi Diffusion, optionally points the app's model folder setting (user default C(ModelDir)) at a
    directory of Core ML models.
options:
  name:
    description: The app's name in sdenv_apps and lock.yml (the cask token).
    type: str
    required: true
  entry:
    description: Its lock entry (version, app, bundle_id, min_macos, downloads by architecture).
    type: dict
    required: true
  architecture:
    description: C(ansible_facts['architecture']).
    type: str
    required: true
  macos_version:
    description: C(ansible_facts['distribution_version']).
    type: str
    required: true
  applications:
    description: The dummy's Applications folder.
    type: path
    required: true
  cache_dir:
    description: Where the archive is downloaded (and kept while a download is unfinished).
    type: path
    required: true
  home:
    description: The dummy's home (the cache directory is made below it, with no symbolic link on the way).
    type: path
    required: true
  recorded:
    description: Whether the provision record says the toolkit installed this app (then another version is replaced).
    type: bool
    default: false
  models_dir:
    description: Mochi Diffusion only - a directory of Core ML model folders to point the app at (empty - leave it).
    type: path
    default: ""
  checkpoints_dir:
    description: The model store's checkpoints (<sdenv_model_store>/checkpoints), named in the I(models) sentence.
    type: path
    required: true
  user:
    description: The dummy's name, for the I(models) sentence.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: DiffusionBee, pinned
  mac_app:
    name: diffusionbee
    entry: "{{ sdenv_lock.mac_apps.diffusionbee }}"
    architecture: "{{ ansible_facts['architecture'] }}"
    macos_version: "{{ ansible_facts['distribution_version'] }}"
    applications: /Users/dummy/Applications
    cache_dir: /Users/dummy/Library/Caches/sdenv-mac-apps
    home: /Users/dummy
    checkpoints_dir: /Users/dummy/sd-models/checkpoints
    user: dummy
  become: true
  become_user: dummy
"""

RETURN = r"""
path:
  description: The app bundle's path.
  type: str
  returned: success
action:
  description: keep, install or replace (what was done, or would be in check mode).
  type: str
  returned: success
installed_now:
  description: Whether this run put the bundle there.
  type: bool
  returned: success
models:
  description: One sentence - what the toolkit does for this app with the model store's checkpoints (and what the user does).
  type: str
  returned: success
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mac_apps import (
    MacAppError,
    archive_installer,
    download_for,
    install,
    models_note,
    plan,
    present_bundle,
    set_model_dir,
)
from ansible.module_utils.model_download import ModelFileError, SourceError


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "entry": {"type": "dict", "required": True},
            "architecture": {"type": "str", "required": True},
            "macos_version": {"type": "str", "required": True},
            "applications": {"type": "path", "required": True},
            "cache_dir": {"type": "path", "required": True},
            "home": {"type": "path", "required": True},
            "recorded": {"type": "bool", "default": False},
            "models_dir": {"type": "path", "default": ""},
            "checkpoints_dir": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if os.geteuid() == 0:
        module.fail_json(
            msg="mac_app runs as root, and the dummy's apps must be its own: set become_user to the dummy."
        )

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    entry = p["entry"]
    app_path = os.path.join(p["applications"], entry["app"])
    result = {"changed": False, "path": app_path, "installed_now": False}
    try:
        download = download_for(p["name"], entry, p["architecture"], p["macos_version"])
        action = plan(app_path, present_bundle(app_path), entry, p["recorded"])
        result["action"] = action
        if action != "keep":
            result["changed"] = True
            result["diff"] = {
                "before": "" if action == "install" else app_path + "\n",
                "after": f"{app_path} {entry['version']}\n",
            }
            if not module.check_mode:
                install_archive(run, p, entry, download)
                result["installed_now"] = True
        if p["models_dir"] and set_model_dir(
            run, entry["bundle_id"], "ModelDir", p["models_dir"], module.check_mode
        ):
            result["changed"] = True
            result["model_dir_set"] = p["models_dir"]
        result["models"] = models_note(p["name"], entry, p["checkpoints_dir"], p["user"], p["models_dir"])
    except (MacAppError, ModelFileError, SourceError) as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


def install_archive(run, p, entry, download):
    archive = os.path.join(p["cache_dir"], os.path.basename(download["url"].split("?", 1)[0]))
    installer = archive_installer(
        {
            "dest": archive,
            "urls": [download["url"]],
            "sha256": download["sha256"],
            "size": download.get("size"),
            "name": f"{p['name']} {entry['version']} ({os.path.basename(archive)})",
            "stat_cache": os.path.join(p["cache_dir"], "stat-cache.json"),
            "rejected_dir": os.path.join(p["cache_dir"], "rejected"),
            "dirs_below": p["home"],
        }
    )
    outcome = installer.run()
    if outcome.get("failed") or not os.path.isfile(archive):
        raise MacAppError(outcome.get("msg") or f"{os.path.basename(archive)} could not be downloaded.")
    workdir = tempfile.mkdtemp(prefix="unpack-", dir=p["cache_dir"])
    try:
        install(run, archive, entry, p["applications"], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # The image is hundreds of MB and the app is now in place: the pin can fetch it again when needed.
    os.unlink(archive)


if __name__ == "__main__":
    main()
