#!/usr/bin/python
"""Ansible module (on the controller): check the fleet cache before a run serves it, and seal it afterwards."""

DOCUMENTATION = r"""
module: bundle_cache_controller
short_description: Check or seal the controller's fleet cache (a bundle kept between runs)
description:
  - C(state=check) hashes again every cached file whose stat changed since it last verified, removes any whose
    sha256 no longer matches SHA256SUMS (with SHA256SUMS, so the builder fetches it again from upstream) and
    says whether the cache can serve this spec as it is (then nothing is fetched at all).
  - C(state=seal) records each file's stat and the spec once the builder has finished, and returns the list
    of files hosts copy.
  - C(state=pack) writes one tar of the small files a host lacks (they travel together - one copy, not one
    round trip each).
  - Run it on the controller (delegate_to localhost). Logic in module_utils/bundle_cache.py.
options:
  bundle: {description: The cached bundle directory on the controller., type: path, required: true}
  spec_digest: {description: "sha256 of what the bundle is made from (lock, platform, models, venv locks); check
    and seal.", type: str, default: ""}
  state: {description: check, seal or pack., type: str, choices: [check, seal, pack], default: check}
  paths: {description: The files to pack (state=pack)., type: list, elements: str, default: []}
  dest: {description: The tar to write (state=pack)., type: path}
  deep: {description: Hash every file again (make DEEP=1)., type: bool, default: false}
"""

EXAMPLES = r"""
- name: Check the fleet cache
  bundle_cache_controller:
    bundle: /root/.cache/sdenv/fleet/Linux-x86_64
    spec_digest: "{{ digest }}"
  delegate_to: localhost
"""

RETURN = r"""
complete: {description: The cache serves this spec as it is (state=check)., type: bool, returned: state=check}
removed: {description: Files removed because their sha256 no longer matched., type: list, returned: state=check}
files: {description: "[{path, sha256, size}] hosts copy (state=seal).", type: list, returned: state=seal}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bundle_cache import check_controller, pack, seal_controller
from ansible.module_utils.bundle_layout import BundleError


def main():
    module = AnsibleModule(
        argument_spec={
            "bundle": {"type": "path", "required": True},
            "spec_digest": {"type": "str", "default": ""},
            "state": {"type": "str", "choices": ["check", "seal", "pack"], "default": "check"},
            "paths": {"type": "list", "elements": "str", "default": []},
            "dest": {"type": "path"},
            "deep": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["state"] == "check":
            if module.check_mode:
                module.exit_json(changed=False, complete=False, removed=[], hashed=0)
            found = check_controller(p["bundle"], p["spec_digest"], deep=p["deep"])
            warnings = [
                f"The fleet cache's {name} no longer matched its sha256: removed, fetched again from upstream."
                for name in found["removed"]
            ]
            module.exit_json(changed=bool(found["removed"]), warnings=warnings, **found)
        if p["state"] == "pack":
            if not module.check_mode:
                pack(p["bundle"], p["paths"], p["dest"])
            module.exit_json(changed=True, dest=p["dest"], packed=len(p["paths"]))
        files = seal_controller(p["bundle"], p["spec_digest"])
        module.exit_json(changed=False, files=files, total=sum(f["size"] for f in files))
    except (BundleError, OSError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
