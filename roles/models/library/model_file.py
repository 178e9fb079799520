#!/usr/bin/python
# Thin Ansible wrapper: the logic is in module_utils/model_download.py (unit-tested without Ansible).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_file
short_description: Install a model file pinned by SHA256, never a bad one
description:
  - >-
    Accepts a present file without reading it when its size, mtime and inode match the stat-cache entry
    recorded for the pinned SHA256; otherwise hashes it, and downloads when it does not match.
  - >-
    Downloads into C(<dest>.part) (resumed with Range when the server answers 206, restarted on 200,
    416 handled), follows redirects without sending Authorization to another host, asks the original URL
    again when a presigned redirect has expired, hashes while streaming, checks free space first, fsyncs,
    verifies size, SHA256 and the safetensors structure, then renames atomically with owner and mode set.
  - >-
    Sources are tried in order; each is an http(s) URL, a file:// URL, an absolute file path, or a
    local bundle directory (the file is looked up there by the basename of I(dest)).
  - >-
    A file with the wrong SHA256, size or structure is never installed; it is kept for inspection in
    I(rejected_dir) (a 0700 directory of the running user, the file 0600), never beside I(dest).
  - >-
    The token is sent only to the origins I(token_hosts) allows (https, or http to a loopback host), never
    to another source of the same file, and never across a redirect to another origin.
  - >-
    A file:// URL or a file path is read only inside a bundle directory (one among the sources, or in
    I(bundle_dirs)), opened with no symbolic link followed below that directory.
  - >-
    .ckpt/.pt files are pickles and are refused unless I(allow_ckpt); then their pickle imports are
    scanned and anything but the globals a checkpoint needs is refused.
  - >-
    One writer per C(<dest>.part) - a download holds an exclusive lock (a small root-only file beside the
    stat cache) until the file is installed; a second run on the same file waits for it, then accepts the
    installed file or resumes what the first run left.
  - >-
    Stops within seconds when the run is interrupted (SIGINT, SIGTERM, SIGHUP, or the controller gone: a
    newline written to stdout every second fails), keeping the partial file for the next run to resume.
  - >-
    The role's action plugin of the same name shows download progress on the controller and passes the
    token from the controller's environment variable named by I(token_env), over pipelining only.
version_added: "0.1.0"
options:
  dest:
    description: Final path of the model file.
    type: path
    required: true
  urls:
    description: Sources in order of preference (http(s), file://, absolute path, bundle directory).
    type: list
    elements: str
    required: true
  sha256:
    description: The pinned SHA256 (64 hex digits). Required unless I(allow_unpinned).
    type: str
  size:
    description: The pinned size in bytes, when known.
    type: int
  name:
    description: Name used in messages and progress (default the basename of I(dest)).
    type: str
  token_env:
    description:
      - Name of the environment variable holding a bearer token (e.g. CIVITAI_TOKEN). The action plugin
        reads it on the controller; the module falls back to the target's environment.
    type: str
  token:
    description: The bearer token itself (set by the action plugin; never logged).
    type: str
  token_hosts:
    description:
      - Where the token may go - host names (https, port 443) or origins C(https://host[:port]), or
        C(http://host[:port]) for a loopback host. An exact match only; default C(civitai.com).
    type: list
    elements: str
  bundle_dirs:
    description: Directories besides the bundle directories among I(urls) that file:// URLs may name files in.
    type: list
    elements: path
  rejected_dir:
    description: Where a rejected download is kept. Default C(rejected/) beside I(stat_cache).
    type: path
  owner:
    description: Owner of the installed file (name). Default the current owner / the running user.
    type: str
  group:
    description: Group of the installed file (name). Default the owner's primary group.
    type: str
  mode:
    description: Mode of the installed file.
    type: raw
    default: "0644"
  stat_cache:
    description: Path of the stat cache (JSON). Default C(.sdenv-stat-cache.json) beside I(dest).
    type: path
  progress_file:
    description: Where to write download progress (JSON) for the controller to show.
    type: path
  allow_ckpt:
    description: Accept pickle-based files (.ckpt/.pt) after scanning their imports.
    type: bool
    default: false
  addnet_hash:
    description: Also compute the kohya "addnet" hash the WebUI caches for LoRA files.
    type: bool
    default: false
  deep:
    description: Ignore the stat cache and re-hash a present file.
    type: bool
    default: false
  allow_unpinned:
    description: Install without a pinned SHA256 and report what was seen (the pin step).
    type: bool
    default: false
  download:
    description: When false, only verify what is present and report whether a download is needed.
    type: bool
    default: true
  timeout:
    description: Network timeout in seconds for connecting and for each read.
    type: float
    default: 60
  dirs_below:
    description:
      - Make the missing directories of I(dest) below this one (which must exist), owned like the file, mode
        0755. This directory is reached with no symbolic link another account could change and everything
        below it with none at all (the module runs as root in the dummy's tree); a link there is refused.
    type: path
author: sdenv
"""

EXAMPLES = r"""
- name: Install the BRA V7 checkpoint
  model_file:
    dest: /home/dummy/stable-diffusion-webui/models/Stable-diffusion/beautifulRealistic_v7.safetensors
    urls:
      - /var/lib/sdenv/model-bundle
      - https://civitai.com/api/download/models/177164
    sha256: 1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c
    token_env: CIVITAI_TOKEN
    token_hosts: [civitai.com]
    owner: dummy
    mode: "0644"
"""

RETURN = r"""
sha256:
  description: SHA256 of the installed file.
  type: str
  returned: success
size:
  description: Size in bytes.
  type: int
  returned: success
mtime:
  description: Modification time of the installed file (seconds since the epoch).
  type: float
  returned: success
addnet_sha256:
  description: kohya "addnet" hash (SHA256 of the data after the safetensors header), when asked.
  type: str
  returned: when addnet_hash
verified_by:
  description: How the file was accepted - stat-cache (not read), hash (read and hashed) or download.
  type: str
  returned: success
needs_download:
  description: True when the file is missing or wrong (check mode, or download=false).
  type: bool
  returned: always
partial_size:
  description: Bytes kept in C(<dest>.part) by an earlier, interrupted download (null when none).
  type: int
  returned: when needs_download and nothing was downloaded
downloading_elsewhere:
  description: Another run holding this file's download lock (its pid), seen without waiting (download=false).
  type: str
  returned: when needs_download and nothing was downloaded
waited_for:
  description: The other run (its pid) this one waited for, when the file's download lock was held.
  type: str
  returned: when it waited
source:
  description: The source the file came from (query strings removed).
  type: str
  returned: after a download
bytes_downloaded:
  description: Body bytes received in this run.
  type: int
  returned: always
resumed_from:
  description: Size of the partial file a download resumed from (0 when it started fresh).
  type: int
  returned: always
attempts:
  description: Each source tried, with the sentence saying why it failed (null on success).
  type: list
  returned: always
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule

# Run from this repository, the role's module_utils are ansible.module_utils.*; installed as the Ansible
# collection sdenv.toolkit (galaxy.yml), they are the collection's plugins/module_utils.
try:
    from ansible.module_utils.model_fastpath import parse_mode, resolve_ids
except ImportError:
    from ansible_collections.sdenv.toolkit.plugins.module_utils.model_fastpath import parse_mode, resolve_ids


def _ids(module):
    """(uid, gid, warnings) for owner/group; -1 keeps the current value."""
    owner, group = module.params["owner"], module.params["group"]
    try:
        return (*resolve_ids(owner, group), [])
    except KeyError:
        if not module.check_mode:
            module.fail_json(
                msg=f"the owner {owner!r} or group {group!r} of {module.params['dest']} does not exist"
            )
        return -1, -1, [f"owner {owner!r} / group {group!r} does not exist yet (check mode)"]


def _mode(module):
    try:
        return parse_mode(module.params["mode"])
    except ValueError:
        module.fail_json(msg=f"mode {module.params['mode']!r} is not an octal file mode such as '0644'")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            urls=dict(type="list", elements="str", required=True),
            sha256=dict(type="str"),
            size=dict(type="int"),
            name=dict(type="str"),
            token_env=dict(type="str", no_log=False),
            token=dict(type="str", no_log=True),
            token_hosts=dict(type="list", elements="str"),
            bundle_dirs=dict(type="list", elements="path"),
            rejected_dir=dict(type="path"),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0644"),
            stat_cache=dict(type="path"),
            progress_file=dict(type="path"),
            allow_ckpt=dict(type="bool", default=False),
            addnet_hash=dict(type="bool", default=False),
            deep=dict(type="bool", default=False),
            allow_unpinned=dict(type="bool", default=False),
            download=dict(type="bool", default=True),
            timeout=dict(type="float", default=60.0),
            dirs_below=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    uid, gid, warnings = _ids(module)
    mode = _mode(module)
    # The re-run fast path (a present file the stat cache vouches for) is model_file_check's, which the action
    # plugin runs first; the Installer below accepts such a file the same way when this module runs alone.
    try:
        from ansible.module_utils.model_download import Installer, ModelFileError, Spec
        from ansible.module_utils.sdenv_interrupt import Interrupted, InterruptGuard, ansiballz_payload_dir
    except ImportError:  # installed as the Ansible collection sdenv.toolkit
        from ansible_collections.sdenv.toolkit.plugins.module_utils.model_download import (
            Installer,
            ModelFileError,
            Spec,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_interrupt import (
            Interrupted,
            InterruptGuard,
            ansiballz_payload_dir,
        )

    token = p["token"] or (os.environ.get(p["token_env"]) if p["token_env"] else None)
    spec = Spec(
        dest=p["dest"],
        urls=p["urls"],
        sha256=p["sha256"],
        size=p["size"],
        token=token or None,
        token_env=p["token_env"],
        token_hosts=p["token_hosts"],
        bundle_dirs=p["bundle_dirs"],
        rejected_dir=p["rejected_dir"],
        uid=uid,
        gid=gid,
        mode=mode,
        stat_cache=p["stat_cache"],
        progress_file=p["progress_file"],
        allow_ckpt=p["allow_ckpt"],
        addnet_hash=p["addnet_hash"],
        deep=p["deep"],
        allow_unpinned=p["allow_unpinned"],
        timeout=p["timeout"],
        name=p["name"],
        dirs_below=p["dirs_below"],
    )
    installer = Installer(spec, check_mode=module.check_mode)
    # AnsiballZ passes the path of this run's payload zip as a global; the guard's last resort removes it.
    guard = InterruptGuard(payload_dir=ansiballz_payload_dir(globals().get("_modlib_path"), "model_file"))
    try:
        with guard:
            result = installer.run(download=p["download"])
    except ModelFileError as exc:
        installer.progress.remove()
        module.fail_json(msg=str(exc), dest=spec.dest, name=spec.name, attempts=installer.result["attempts"])
    except Interrupted:
        installer.progress.remove()
        if guard.controller_lost:
            sys.exit(1)  # nobody reads a result any more; exiting still runs AnsiballZ's cleanup
        module.fail_json(
            msg=installer.stopped_sentence(guard.reason),
            dest=spec.dest,
            name=spec.name,
            interrupted=True,
            partial_size=installer.partial_size(),
            attempts=installer.result["attempts"],
        )
    result["warnings"] = warnings + result.get("warnings", [])
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
