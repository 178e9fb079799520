#!/usr/bin/python
"""Ansible module: a git work tree at a pinned commit (the WebUI and its sub-repositories)."""

DOCUMENTATION = r"""
module: webui_git_tree
short_description: Hold a git work tree at a pinned commit without clobbering local changes
description:
  - Clones in full into a temporary sibling and renames it into place, so no half clone sits at I(dest).
  - An existing tree at I(commit) with no local changes is left alone (no fetch); objects are fetched only when
    I(commit) is missing. Tracked files with local changes fail the task with one sentence naming them,
    unless I(force) resets them.
  - Run it as the tree's owner (become_user); it never changes ownership.
options:
  dest: {description: The work tree., type: path, required: true}
  repo: {description: The origin URL (set when it differs)., type: str, required: true}
  source: {description: "A local repository with the same commits to clone or fetch from instead of repo (an
    offline bundle's git/<name>.git); origin still says repo.", type: path, default: ""}
  commit: {description: The full pinned commit., type: str, required: true}
  label: {description: What the tree is, for messages., type: str, default: tree}
  force: {description: Reset tracked files with local changes., type: bool, default: false}
  managed:
    description: Tracked files the toolkit writes itself (never local changes; restored before a checkout).
    type: list
    elements: str
    default: []
  repositories:
    description: "Sub-repositories to bring to their commits in the same run, after I(dest): the lock's
      [{dir, repo, commit}], each to I(dest)/repositories/<dir>, with the same I(force)."
    type: list
    elements: dict
    default: []
  repositories_source:
    description: A directory holding <dir>.git for each sub-repository (an offline bundle's git/), or empty.
    type: path
    default: ""
  progress_file: {description: "A file to write clone/fetch progress to (the action plugin names it and shows
    it).", type: path, default: ""}
"""

EXAMPLES = r"""
- name: The WebUI at its pinned commit
  webui_git_tree:
    dest: /home/dummy/stable-diffusion-webui
    repo: https://github.com/AUTOMATIC1111/stable-diffusion-webui.git
    commit: 82a973c04367123ae98bd9abdf80d9eda9b910e2
    managed: [webui-user.sh]
"""

RETURN = r"""
action: {description: "none, clone, set-url, checkout, reset or repair (a broken .git made a repository again).",
         type: str, returned: always}
before: {description: HEAD before the call (null when cloned)., type: str, returned: always}
after: {description: HEAD after the call., type: str, returned: always}
fetched: {description: Objects were fetched from the remote., type: bool, returned: always}
reset_files: {description: Files whose local changes were reset (force)., type: list, returned: always}
repaired: {description: The tree's .git was no repository and was made one again in place., type: bool,
           returned: always}
trees: {description: "The result of each of I(repositories), in order (action, before, after, ...).", type: list,
        returned: always}
broken_git_kept: {description: Where a non-empty broken .git was kept aside (empty when none)., type: str,
                  returned: always}
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.webui_git_tree import GitTreeError, ensure_tree


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "repo": {"type": "str", "required": True},
            "source": {"type": "path", "default": ""},
            "commit": {"type": "str", "required": True},
            "label": {"type": "str", "default": "tree"},
            "force": {"type": "bool", "default": False},
            "managed": {"type": "list", "elements": "str", "default": []},
            "progress_file": {"type": "path", "default": ""},
            "repositories": {"type": "list", "elements": "dict", "default": []},
            "repositories_source": {"type": "path", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    wanted = [
        {
            "dest": p["dest"],
            "repo": p["repo"],
            "commit": p["commit"],
            "source": p["source"],
            "label": p["label"],
        },
        *(
            {
                "dest": os.path.join(p["dest"], "repositories", str(r.get("dir"))),
                "repo": r.get("repo"),
                "commit": r.get("commit"),
                "source": os.path.join(p["repositories_source"], f"{r.get('dir')}.git")
                if p["repositories_source"]
                else "",
                "label": f"sub-repository {r.get('dir')}",
            }
            for r in p["repositories"]
        ),
    ]
    for tree in wanted:
        if not re.fullmatch(r"[0-9a-f]{40}", str(tree.get("commit") or "")):
            module.fail_json(
                msg=f"The pinned commit {tree.get('commit')!r} for the {tree.get('label') or 'tree'} is not a full "
                "40-hex sha: fix the lock."
            )
    git = module.get_bin_path("git", required=True)
    results = []
    try:
        for n, tree in enumerate(wanted):
            managed = p["managed"] if n == 0 else []
            results.append(
                ensure_tree(tree["dest"], tree["repo"], tree["commit"],
                            tree.get("label") or "tree", p["force"], managed, module.check_mode, git,
                            tree.get("source") or "", p["progress_file"])
            )  # fmt: skip
    except (GitTreeError, OSError) as exc:
        module.fail_json(msg=str(exc), trees=results[1:])
    result, more = results[0], results[1:]
    module.exit_json(
        **{**result, "changed": any(r["changed"] for r in results)},
        trees=more,
        diff={
            "before": "".join(f"{t['dest']}: {r['before'] or '(absent)'}\n" for t, r in zip(wanted, results)),
            "after": "".join(f"{t['dest']}: {r['after']}\n" for t, r in zip(wanted, results)),
            "before_header": p["dest"],
            "after_header": p["dest"],
        },
    )


if __name__ == "__main__":
    main()
