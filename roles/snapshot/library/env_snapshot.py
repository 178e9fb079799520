#!/usr/bin/python
"""Ansible module: Time Machine-style snapshots of the working environment (logic in snapshot_store)."""

DOCUMENTATION = r"""
module: env_snapshot
short_description: Snapshot, list, check, prune and roll back the working environment
description:
  - Content-addressed store (format in roles/snapshot/README.md); every operation takes the store's flock.
  - C(state=facts) gathers the manifest facts and must run as the environment's owner (become_user).
  - With O(facts_user), C(state=snapshot) and C(state=rollback) gather the manifest facts themselves, every
    command of it run as that account, so a snapshot is one module run after the preflight. When the
    account does not exist they do nothing and return C(account=false) (the role says why in one sentence).
options:
  state:
    description: What to do.
    type: str
    choices: [snapshot, list, check, prune, rollback, facts, pin, unpin]
    default: snapshot
  store: {description: The store directory on the host., type: path}
  paths: {description: Absolute paths to capture (absent ones are recorded as absent)., type: list, elements: path, default: []}
  record_path: {description: The provision record; the Homebrew prefix it lists as toolkit-made is captured too., type: path}
  user: {description: The dummy user whose record entry names the Homebrew prefix., type: str}
  label: {description: "Snapshot label (1-64 of letters, digits, '.', '_', '-').", type: str, default: ""}
  kind: {description: Why the snapshot was taken., type: str, choices: [manual, known-good, before-rollback], default: manual}
  pinned: {description: Keep this snapshot whatever the retention policy says., type: bool, default: false}
  only_if_changed:
    description:
      - Take no new snapshot (changed=false) when the newest of the same kind holds the same contents, leaving
        out what a rollback keeps in O(webui_dir) and O(comfyui_dir) (their user data, and what the WebUI
        writes for itself as it runs, see plugins/module_utils/app_data.py), __pycache__ and new empty folders. When the
        WebUI's config.json or ui-config.json alone differ, the snapshot is taken (a rollback puts back the
        newest copy) and reported unchanged, C(refreshed) naming the one it supersedes.
    type: bool
    default: false
  to:
    description: Snapshot id, label (the newest snapshot carrying it), unique id prefix or latest (rollback, pin, unpin).
    type: str
    default: latest
  only_paths: {description: Roll back only these absolute paths (inside the snapshot's roots)., type: list, elements: path, default: []}
  deep: {description: check re-hashes every pack, object and tree., type: bool, default: false}
  retention: {description: keep_last, keep_hourly_hours, keep_daily_days, keep_weekly_weeks., type: dict, default: {}}
  facts: {description: Facts gathered by state=facts, recorded in the manifest., type: dict, default: {}}
  webui_dir: {description: The WebUI tree (facts; rollback refuses while it runs)., type: path}
  user_data:
    description:
      - Paths relative to O(webui_dir) a rollback leaves as they are (the user's work), unless O(only_paths) names
        them or a path inside them; what the WebUI writes for itself and the toolkit pins nothing in
        (params.txt, styles.csv, cache/, config_states/, see plugins/module_utils/app_data.py) is kept too.
    type: list
    elements: str
    default: []
  comfyui_dir:
    description: ComfyUI's tree (rollback refuses while ComfyUI runs from it; its commit is a fact when O(apps) names comfyui).
    type: path
  comfyui_venv_dir: {description: "ComfyUI's venv (the lock it was built from is a fact); default <comfyui_dir>/venv.", type: path}
  apps:
    description:
      - The apps sdenv_apps chooses. With comfyui, the facts gathered also hold ComfyUI's commit and the sha256 of
        the lock its venv was built from; without it they are left out (the plan's diff then says "not recorded").
    type: list
    elements: str
    default: []
  comfyui_user_data:
    description:
      - Paths relative to O(comfyui_dir) a rollback leaves as they are (ComfyUI's output, input and user
        folders), unless O(only_paths) names them or a path inside them.
    type: list
    elements: str
    default: []
  brew: {description: The brew executable for facts (only when the toolkit installed Homebrew)., type: path}
  facts_user:
    description:
      - The environment's owner. With it, snapshot and rollback gather the facts (git, python, pip, brew) as
        this account before they act, and do nothing (C(account=false)) when it does not exist. O(facts), when
        given too, is used as it is instead (a rollback hands over the facts its plan gathered).
    type: str
  lock_digest: {description: SHA-256 of the lock the host was provisioned from., type: str}
"""

EXAMPLES = r"""
- name: Snapshot the environment
  env_snapshot:
    store: /var/lib/sdenv/snapshots
    paths: [/home/dummy/stable-diffusion-webui, /home/dummy/.zprofile]
    label: before-upgrade
"""

RETURN = r"""
id: {description: The snapshot taken, or the before-rollback snapshot., type: str, returned: snapshot, rollback}
refreshed:
  description: The snapshot of the same environment a fresher copy of the WebUI's settings files superseded.
  type: str
  returned: snapshot, when only those differ
manifest: {description: The manifest written (facts omitted)., type: dict, returned: snapshot}
snapshots: {description: id, time, label, kind, files, logical_bytes, new_bytes, pinned of each snapshot., type: list, returned: list}
table: {description: The snapshots as the lines of an aligned table with a header., type: list, returned: list}
lines: {description: "The rollback's plan (check mode) or its result and the command that undoes it, as sentences.", type: list, returned: rollback}
target: {description: The id of the snapshot rolled back to., type: str, returned: rollback}
check: {description: ok, errors, garbage counts., type: dict, returned: check}
plan:
  description: Per root, what a rollback removes, writes, links, creates and fixes, per top-level entry (groups) and what it keeps (kept).
  type: dict
  returned: rollback
facts: {description: The gathered facts., type: dict, returned: "facts; rollback in check mode with facts_user"}
account: {description: False when O(facts_user) names no account (nothing was done)., type: bool, returned: when facts_user is given}
prune: {description: Snapshots forgotten and bytes freed., type: dict, returned: prune}
"""

import os

from ansible.module_utils.app_data import COMFYUI_KEPT, WEBUI_KEPT, WEBUI_RESTORED, kept_paths
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.snapshot_facts import account, diff_facts, gather, homebrew_roots, running_webui
from ansible.module_utils.snapshot_retention import RetentionError, normalize_policy
from ansible.module_utils.snapshot_store import SnapshotError, Store
from ansible.module_utils.snapshot_store.report import plan_text, result_lines, snapshot_table


def warn(module, warnings, most=20):
    """The store's warnings through module.warn (exit_json's warnings= is deprecated, removed in 2.23)."""
    for text in warnings[:most]:
        module.warn(text)
    if len(warnings) > most:
        module.warn(f"... and {len(warnings) - most} more warning(s) like these.")


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {
                "type": "str",
                "default": "snapshot",
                "choices": ["snapshot", "list", "check", "prune", "rollback", "facts", "pin", "unpin"],
            },
            "store": {"type": "path"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "record_path": {"type": "path"},
            "user": {"type": "str"},
            "label": {"type": "str", "default": ""},
            "kind": {
                "type": "str",
                "default": "manual",
                "choices": ["manual", "known-good", "before-rollback"],
            },
            "pinned": {"type": "bool", "default": False},
            "only_if_changed": {"type": "bool", "default": False},
            "to": {"type": "str", "default": "latest"},
            "only_paths": {"type": "list", "elements": "path", "default": []},
            "deep": {"type": "bool", "default": False},
            "retention": {"type": "dict", "default": {}},
            "facts": {"type": "dict", "default": {}},
            "webui_dir": {"type": "path"},
            "user_data": {"type": "list", "elements": "str", "default": []},
            "comfyui_dir": {"type": "path"},
            "comfyui_venv_dir": {"type": "path"},
            "apps": {"type": "list", "elements": "str", "default": []},
            "comfyui_user_data": {"type": "list", "elements": "str", "default": []},
            "brew": {"type": "path"},
            "lock_digest": {"type": "str"},
            "facts_user": {"type": "str"},
        },
        required_if=[
            ("state", s, ["store"])
            for s in ("snapshot", "list", "check", "prune", "rollback", "pin", "unpin")
        ],
        supports_check_mode=True,
    )
    p = module.params
    # ComfyUI's facts where it is chosen (rollback is given its tree whether or not it is, for the running
    # check and its user data).
    comfyui = {
        "comfyui_dir": p["comfyui_dir"] if "comfyui" in p["apps"] else None,
        "comfyui_venv_dir": p["comfyui_venv_dir"],
    }
    try:
        if p["state"] == "facts":
            module.exit_json(changed=False, facts=gather(p["webui_dir"] or "", brew=p["brew"], **comfyui))
        facts = dict(p["facts"] or {})
        if p["facts_user"] and p["state"] in ("snapshot", "rollback"):
            owner = account(p["facts_user"])
            if owner is None:
                module.exit_json(changed=False, account=False, msg=f"There is no account {p['facts_user']}.")
            if not facts:
                facts = gather(p["webui_dir"] or "", brew=p["brew"], owner=owner, **comfyui)
        store = Store(p["store"])
        if p["lock_digest"]:
            facts["lock_digest"] = p["lock_digest"]
        roots = list(p["paths"]) + homebrew_roots(p["record_path"], p["user"])
        # What a rollback keeps as it is, per app tree: (tree, relative paths).
        apps_kept = (
            (p["webui_dir"], kept_paths(p["webui_dir"], p["user_data"], WEBUI_KEPT)),
            (p["comfyui_dir"], kept_paths(p["comfyui_dir"], p["comfyui_user_data"], COMFYUI_KEPT)),
        )
        if p["state"] == "snapshot":
            res = store.snapshot(
                roots,
                p["label"],
                p["kind"],
                p["pinned"],
                facts=facts,
                dry_run=module.check_mode,
                only_if_changed=p["only_if_changed"],
                app_writes={
                    os.path.normpath(tree): {
                        "kept": kept,
                        "restored": list(WEBUI_RESTORED) if tree == p["webui_dir"] else [],
                    }
                    for tree, kept in apps_kept
                    if tree
                },
            )
            if module.check_mode:
                module.exit_json(**res)
            m = dict(
                res["manifest"], facts={k: v for k, v in res["manifest"]["facts"].items() if k == "absent"}
            )
            warn(module, res.pop("warnings", []))
            refreshed = {"refreshed": res["refreshed"]} if res.get("refreshed") else {}
            module.exit_json(changed=res["changed"], id=res["id"], manifest=m, **refreshed)
        if p["state"] == "list":
            snapshots = store.list()
            module.exit_json(changed=False, snapshots=snapshots, table=snapshot_table(snapshots))
        if p["state"] == "check":
            res = store.check(p["deep"])
            if not res["ok"]:
                module.fail_json(
                    msg=f"The snapshot store at {store.path} has {len(res['errors'])} error(s): "
                    f"{'; '.join(res['errors'][:5])}.",
                    check=res,
                )
            module.exit_json(changed=False, check=res)
        if p["state"] == "prune":
            normalize_policy(p["retention"])
            res = store.prune(p["retention"], dry_run=module.check_mode)
            warn(module, res.pop("warnings", []))
            module.exit_json(changed=res["changed"], prune=res)
        if p["state"] in ("pin", "unpin"):
            if module.check_mode:
                m = store.load_manifest(store.resolve(p["to"]))
                module.exit_json(changed=bool(m.get("pinned")) != (p["state"] == "pin"), id=m["id"])
            module.exit_json(**store.set_pinned(p["to"], p["state"] == "pin"))
        # rollback
        apps = (("The WebUI", p["webui_dir"]), ("ComfyUI", p["comfyui_dir"]))
        for name, tree in apps:
            running = running_webui(tree) if tree else []
            if running:
                module.fail_json(
                    msg=f"{name} is running from {tree} (pid {running[0]['pid']}): stop it, then roll back; "
                    "nothing was changed.",
                    running=running,
                )
        target_id, note = store.resolve_ref(p["to"])
        target = store.load_manifest(target_id)
        keep = [os.path.join(tree, rel) for tree, kept in apps_kept if tree for rel in kept]
        res = store.rollback(
            target_id, p["only_paths"] or None, dry_run=module.check_mode, facts=facts, keep=keep
        )
        before_facts = facts if module.check_mode else store.load_manifest(res["before"])["facts"]
        plan = plan_text(res["plan"], target, note)
        res["diff"] = {
            "before_header": "live environment",
            "after_header": f"snapshot {target_id}",
            "before": "",
            "after": "\n".join(diff_facts(before_facts, target["facts"]) + plan) + "\n",
        }
        res["lines"] = plan if module.check_mode else ([note] if note else []) + result_lines(res, target)
        if module.check_mode and p["facts_user"]:
            res["facts"] = facts  # the rollback that follows the plan records these in its before-snapshot
        warn(module, res.pop("warnings", []))
        module.exit_json(id=res.get("before"), **res)
    except (SnapshotError, RetentionError) as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg=f"Snapshot operation failed on {e.filename or p['store']}: {e.strerror}.")


if __name__ == "__main__":
    main()
