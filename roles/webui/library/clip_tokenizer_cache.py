#!/usr/bin/python
"""Ansible module: seed the Hugging Face cache with the CLIP tokenizer files, from pinned sources only."""

DOCUMENTATION = r"""
module: clip_tokenizer_cache
short_description: Put openai/clip-vit-large-patch14's tokenizer and config files in the Hugging Face cache
description:
  - C(vocab.json) and C(merges.txt) are derived from the BPE table inside the pinned CLIP archive; the small
    JSON files come from I(shipped). Every file must have the sha256 the lock pins before anything is written.
  - Files already in place with the pinned sha256 are left alone, and then the archive is not even read.
  - Run it as the cache's owner (become_user).
options:
  hf_home: {description: HF_HOME of the WebUI user., type: path, required: true}
  revision: {description: The hub revision the snapshot is filed under., type: str, required: true}
  sha256: {description: "File name -> pinned sha256, for every file of the snapshot.", type: dict, required: true}
  shipped_b64: {description: "File name -> base64 of the content, for the files that are fixed data.", type: dict,
    default: {}}
  archive: {description: "The pinned CLIP archive {url, file, sha256}.", type: dict, required: true}
  wheelhouse: {description: A local directory holding the archive (no network)., type: path, default: ""}
  cache_dir: {description: Where a downloaded archive is kept., type: path, required: true}
"""

EXAMPLES = r"""
- name: CLIP tokenizer files in the Hugging Face cache
  clip_tokenizer_cache:
    hf_home: /home/dummy/.cache/huggingface
    revision: 32bd64288804d66eefd0ccbe215aa642df71cc41
    sha256: {vocab.json: 3f0c4f7d2086b61b38487075278ea9ed04edb53a03cbb045b86c27190fa8fb69}
    archive: {url: "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip",
              file: CLIP-d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip}
    cache_dir: /home/dummy/.cache/sdenv/archives
"""

RETURN = r"""
written: {description: Paths written by this call., type: list, returned: always}
snapshot: {description: The snapshot directory., type: str, returned: always}
"""

import base64
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.clip_tokenizer_files import (
    TokenizerCacheError,
    check_hashes,
    derived_files,
    file_matches,
    planned_files,
    repo_dir,
    sha256_file,
    write_atomic,
)
from ansible.module_utils.webui_venv_plan import VenvError, locate_archive


def in_place(hf_home, revision, pinned):
    """True when every pinned file (and the small bookkeeping files) is already there, by hash."""
    snapshot = os.path.join(repo_dir(hf_home), "snapshots", revision)
    for name, wanted in pinned.items():
        path = os.path.join(snapshot, name)
        if not os.path.isfile(path) or sha256_file(path) != wanted:
            return False
    bookkeeping = planned_files(hf_home, revision, {})
    return all(file_matches(path, data) for path, data in bookkeeping.items())


def main():
    module = AnsibleModule(
        argument_spec={
            "hf_home": {"type": "path", "required": True},
            "revision": {"type": "str", "required": True},
            "sha256": {"type": "dict", "required": True},
            "shipped_b64": {"type": "dict", "default": {}},
            "archive": {"type": "dict", "required": True},
            "wheelhouse": {"type": "path", "default": ""},
            "cache_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    snapshot = os.path.join(repo_dir(p["hf_home"]), "snapshots", p["revision"])
    if in_place(p["hf_home"], p["revision"], p["sha256"]):
        module.exit_json(changed=False, written=[], snapshot=snapshot)
    if module.check_mode:
        module.exit_json(changed=True, written=[], snapshot=snapshot)
    try:
        archive, _, _ = locate_archive(p["archive"], p["wheelhouse"], p["cache_dir"])
        files = derived_files(archive)
        files.update({name: base64.b64decode(text) for name, text in p["shipped_b64"].items()})
        check_hashes(files, p["sha256"])
        written = []
        for path, data in planned_files(p["hf_home"], p["revision"], files).items():
            if not file_matches(path, data):
                write_atomic(path, data)
                written.append(path)
    except (TokenizerCacheError, VenvError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=bool(written), written=written, snapshot=snapshot)


if __name__ == "__main__":
    main()
