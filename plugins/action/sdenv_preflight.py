# The preflight (playbooks/preflight.yml, the first play of every playbook): checks every value the target
# will use on this host, before any task that changes a host, and fails with one sentence per bad value.
#
# On the controller, because only the controller knows where a value came from. It:
# 1. reads the argument specs of the entry points the target runs (`uses`, narrowed by --tags/--skip-tags)
#    and those roles' defaults (the derived values), so the specs stay the one list of what is used;
# 2. reads the facts the settings are made from and the host's accounts (module preflight_facts, one run,
#    reads only: the play gathers no facts of its own);
# 3. resolves each value for this host with Ansible's own templating (facts, group_vars, host vars, -e);
# 4. names where each value was set from the origin Ansible 2.19 records on every value it loads (file and
#    line, "-e", an environment variable), falling back to reading the inventory's files for values that
#    carry no origin (null and booleans cannot carry one);
# 5. runs the rules (plugins/module_utils/sdenv_preflight*.py) and fails with their sentences;
# 6. for a target that changes the host (`lock`: its make target), takes the host's run lock in the same module
#    run (module_utils/sdenv_run_lock.py): no play or task of its own. A lock another run holds is waited for
#    (a second module run, after the checks passed, so a bad value is still said at once); a refusal after
#    the lock was taken releases it before it returns.
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

from ansible import constants as C
from ansible import context
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

try:  # Ansible >= 2.19 records where each value was loaded from (the pinned ansible-core is 2.19).
    from ansible._internal._datatag._tags import Origin
except ImportError:  # pragma: no cover - an older or newer layout: fall back to reading the files
    Origin = None

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ("local", "ansible.builtin.local")
display = Display()
# The rules are plain module_utils, imported here as Ansible imports them on a host (and as the unit tests do).
for _directory in [ROOT / "plugins" / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]:
    if str(_directory) not in sys.path:
        sys.path.append(str(_directory))

import model_pending  # noqa: E402
import sdenv_facts_cache as facts_cache  # noqa: E402
import sdenv_fastpath as fastpath  # noqa: E402
import sdenv_messages as say  # noqa: E402
import sdenv_preflight as engine  # noqa: E402
import sdenv_preflight_rules as rules  # noqa: E402
import sdenv_reach as reach  # noqa: E402
import sdenv_run_lock as run_lock  # noqa: E402
from dummy_accounts import DarwinAccounts, parse_login_defs_uid_min, parse_useradd_home  # noqa: E402
from sdenv_i18n import _  # noqa: E402


def first_line(error):
    text = str(getattr(error, "message", None) or error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


def given_by(setting, otherwise):
    """A value make hands over (LABEL=, MODELS=, ...) is named by its make variable."""
    made_by = rules.MAKE_VARIABLES.get(setting)
    return f"make's {made_by}=" if made_by else otherwise


def tag_of(value):
    """The origin of a value; a list or mapping made by a template (a split, a combine) carries none itself,
    but its items keep theirs."""
    origin = Origin.get_tag(value)
    if origin is None and isinstance(value, (list, tuple, dict)):
        items = value.values() if isinstance(value, dict) else value
        origin = next((o for o in map(tag_of, items) if o is not None), None)
    return origin


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        self._lock = None  # this host's run lock, as the module run that took it returned it
        self._timeout = 0
        checked = self._checked(result, task_vars)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if checked.get("failed"):
            self._release(task_vars)
            return checked
        if self._lock is not None:
            waited = self._wait_for_lock(task_vars)
            if waited.get("failed"):
                return {**result, **waited}
            checked["run_lock"] = {k: v for k, v in self._lock.items() if k != "run"}
            # Over SSH the run's last play releases it (run-unlock.yml); here the callback does, at the end.
            checked["ansible_facts"]["sdenv_run_lock_release"] = not self._lock.get("local")
        return checked

    def _checked(self, result, task_vars):
        uses = self._task.args.get("uses") or []
        uses = [uses] if isinstance(uses, str) else list(uses)
        if not uses:
            raise AnsibleError(
                "sdenv_preflight needs `uses`: the entry points the target runs (role or role:entry)."
            )
        roles = self._role_dirs(uses, task_vars)
        uses = engine.selected_by_tags(
            uses, task_vars.get("ansible_run_tags"), task_vars.get("ansible_skip_tags"), set(roles)
        )
        documents = {use.partition(":")[0]: self._spec_document(use, roles) for use in uses}
        options = engine.load_entry_points(documents, uses)

        entry_points = {engine.entry_point(use) for use in uses}
        defaults = {}
        for use in uses:
            name = use.partition(":")[0]
            path = roles.get(name, Path("/nonexistent")) / "defaults" / "main.yml"
            if name in roles and path.is_file():
                for key, value in (
                    self._loader.load_from_file(str(path), trusted_as_template=True) or {}
                ).items():
                    defaults.setdefault(key, value)

        # One module run per host: it takes the paths, ports and record the facts of this host's previous
        # run lead to (a cache on the controller), and is asked a second time only when this run's facts lead
        # to other ones (the first run on a host, or a host that changed).
        cache = self._facts_cache(task_vars)
        cached = self._read_cache(cache)
        asked = None
        if cached is not None:
            resolved = self._resolve(options, defaults, cached, task_vars)
            asked = self._probe_args(resolved, entry_points, self._task.args.get("reach"))
            asked.update(self._lock_args(resolved))
        probe = self._execute_module(
            module_name="preflight_facts", module_args={**(asked or {}), "facts": True}, task_vars=task_vars
        )
        self._took(probe, asked or {})
        host = self._host(probe)
        if "failed" in host:
            return {**result, **host}
        gathered = host.pop("facts")
        self._write_cache(cache, gathered)
        facts = {**gathered, **(task_vars.get("ansible_facts") or {})}
        variables, templar, values, origins, references = self._resolve(options, defaults, facts, task_vars)
        wanted = self._probe_args(
            (variables, templar, values, origins, references), entry_points, self._task.args.get("reach")
        )
        wanted.update(self._lock_args((variables, templar, values)))
        if wanted != asked:
            if self._lock and self._lock["run"] != wanted.get("lock"):
                self._release(task_vars)  # taken where this host's earlier facts led: not this run's place
            probe = self._execute_module(
                module_name="preflight_facts", module_args={**wanted, "facts": False}, task_vars=task_vars
            )
            self._took(probe, wanted)
        if "dummy_user:main" in entry_points:
            host["dummy_record"] = probe.get("dummy_record")
        if rules.PORT_USERS & entry_points:
            host["ports_in_use"] = probe.get("ports_in_use") or []
        host["places"] = probe.get("places") or {}
        problems = engine.check(
            options,
            values,
            origins,
            rules.RULES,
            rules.CROSS,
            host,
            rules.SYSTEM_PATHS,
            uses,
            origin_of=self._nested_origin,
            references=references,
        )
        if wanted.get("lock"):
            timeout = self._lock_timeout(variables, templar)
            problem = rules.run_lock_timeout_problem(timeout[0], timeout[1])
            problems.extend([problem] if problem else [])
            self._timeout = timeout[0]
        if problems:
            return {**result, "failed": True, "msg": "\n".join(problems)}
        # The facts the settings and the roles use, gathered once for the whole run: the plays after this one
        # gather none of their own (gather_facts: false).
        facts = {f"ansible_{k}": v for k, v in gathered.items()}
        facts["sdenv_preflight_passed"] = True
        if self._task.args.get("fastpath"):
            facts["sdenv_fastpath_plan"] = self._fastpath_plan(
                uses, documents, roles, variables, templar, values
            )
        msg = _("{count} values checked for {uses}").format(count=len(values), uses=", ".join(uses))
        if {"models:main", "models:bundle"} & set(map(engine.entry_point, uses)):
            # A model the user must still fetch by hand is no reason to stop the rest (STRICT=1 made it one
            # above): the models role skips it and the run ends with the list (playbooks/provision.yml).
            pending = model_pending.pending(
                (values.get("sdenv_lock") or {}).get("models"),
                values.get("sdenv_models_enabled"),
                values.get("sdenv_models_bundle_dirs"),
            )
            facts["sdenv_models_pending"] = pending
            facts["sdenv_models_pending_lines"] = model_pending.closing_list(pending)
            if pending:
                msg = say.pending_in_preflight([entry["name"] for entry in pending])
                result.setdefault("warnings", []).append(msg)
        if entry_points & {"webui:main", "models:main"}:
            # What every host task of the run gets (provision.yml's play environment): the proxy and its CA.
            facts["sdenv_network_env"] = self._network(values)
            if wanted.get("sources"):
                if probe.get("unreachable"):
                    sentences = probe["unreachable"]
                    return {
                        **result,
                        "failed": True,
                        "msg": "\n".join([say.unreachable_heading(len(sentences)), *sentences]),
                    }
                checked = probe.get("checked", 0)
                msg += f"; {checked} of {len(wanted['sources'])} sources probed, all answer"
        return {**result, "changed": False, "msg": msg, "ansible_facts": facts}

    # --- the run lock (module_utils/sdenv_run_lock.py) ------------------------------------------------------

    def _lock_args(self, resolved):
        """{"lock": what preflight_facts needs to take this run's lock} for a changing target's real run
        (a dry run takes none), or {} (also when the state directory does not resolve: its rule says so)."""
        target = self._task.args.get("lock")
        if not target or self._play_context.check_mode:
            return {}
        variables, templar, values = resolved[:3]
        state_dir = values.get("sdenv_state_dir")
        if state_dir is None:
            try:
                state_dir = templar.template(variables["sdenv_state_dir"])
            except (AnsibleError, KeyError):
                return {}
        if not isinstance(state_dir, str) or not engine.is_normal_absolute(state_dir):
            return {}
        run = run_lock.controller_run(os.getppid())  # this worker's parent: the run's ansible-playbook
        local = self._connection.transport in LOCAL
        return {"lock": {"state_dir": state_dir, "target": str(target), **run, "local": local}}

    def _lock_timeout(self, variables, templar):
        """(sdenv_run_lock_timeout's value, where it was set)."""
        raw = variables.get("sdenv_run_lock_timeout", 900)
        try:
            value = templar.template(raw)
        except AnsibleError as error:
            value = engine.Unresolved(raw, first_line(error))
        return value, self._origin("sdenv_run_lock_timeout", raw, value, variables)[0]

    def _took(self, probe, args):
        """Keep what a module run did with the lock, and the arguments that name this run to the host (a second
        run's 'ours' adds nothing to the first one's 'acquired')."""
        found = probe.get("run_lock")
        if not isinstance(found, dict) or not args.get("lock"):
            return
        if self._lock and self._lock.get("lock") == "acquired" and found.get("lock") == "ours":
            return
        self._lock = {**found, "run": args["lock"]}

    def _lock_call(self, task_vars, **args):
        return self._execute_module("sdenv_run_lock", {**self._lock["run"], **args}, task_vars=task_vars)

    def _release(self, task_vars):
        """A refusal after this run took the lock: let it go before the user reads the refusal."""
        if self._lock and self._lock.get("lock") == "acquired":
            self._lock_call(task_vars, state="released")
            self._remove_tmp_path(self._connection._shell.tmpdir)
        self._lock = None

    def _wait_for_lock(self, task_vars):
        """The lock another run holds (the preflight's module run took nothing): wait for it as run-lock.yml's task
        did, saying so first, or take over one whose run this controller sees gone."""
        found = self._lock
        host = task_vars.get("inventory_hostname", "")
        if found.get("lock") == "error":
            return {"failed": True, "msg": found.get("msg")}
        if found.get("lock") == "busy":
            timeout = int(self._timeout)
            take_over, message = run_lock.before_waiting(
                found.get("holder") or {}, found["run"]["controller"], timeout
            )
            if message:
                display.display(f"{host}: {message}")
            taken = self._lock_call(task_vars, timeout=timeout, take_over=take_over)
            self._remove_tmp_path(self._connection._shell.tmpdir)
            if taken.get("failed"):
                return {"failed": True, "msg": taken.get("msg")}
            self._lock = {**taken, "run": found["run"]}
        for note in self._lock.get("notes") or []:
            display.display(f"{host}: {note}")
        return {}

    # --- where things are ------------------------------------------------------------------------------

    def _role_dirs(self, uses, task_vars):
        """{role: its directory} for the role entry points; a use with a '/' is a spec file in the repository."""
        search = [
            Path(task_vars.get("playbook_dir", ".")) / "roles",
            *map(Path, C.DEFAULT_ROLES_PATH),
            ROOT / "roles",
        ]
        found = {}
        for use in uses:
            name = use.partition(":")[0]
            if "/" in name:
                continue
            directory = next((d / name for d in search if (d / name / "meta").is_dir()), None)
            if directory is None:
                raise AnsibleError(f"sdenv_preflight: no role {name} in {', '.join(map(str, search))}.")
            found[name] = directory
        return found

    def _spec_document(self, use, roles):
        name = use.partition(":")[0]
        path = roles[name] / "meta" / "argument_specs.yml" if name in roles else ROOT / name
        return self._loader.load_from_file(str(path))

    # --- where a value was set -------------------------------------------------------------------------

    def _describe(self, origin, setting=None):
        """(words, derived) for an Ansible origin, or None when it says nothing."""
        if origin is None or (Origin is not None and origin == Origin.UNKNOWN):
            return None
        if origin.path:
            shown = engine.relative_to(origin.path, os.getcwd())
            derived = bool(re.search(r"/roles/[^/]+/defaults/", origin.path))
            return (f"{shown} line {origin.line_num}" if origin.line_num else shown), derived
        description = origin.description or ""
        if description.startswith("<CLI option"):
            return given_by(setting, "-e on the command line"), False
        variable = re.match(r"<environment variable '(.+)'>", description)
        if variable:
            return given_by(setting, f"the environment variable {variable.group(1)}"), False
        return description, False

    def _nested_origin(self, value):
        """Where a value inside a setting (a lock entry's field) was written; None for one a role default made
        (the setting's own origin says more)."""
        described = self._describe(Origin.get_tag(value)) if Origin is not None else None
        return described[0] if described and not described[1] else None

    def _origin(self, name, raw, value, variables):
        """Where `name` was set: the value's own origin when it came from the command line or the environment
        through a template (make's LABEL= reaches sdenv_snapshot_label so); for a role default made from such
        a value (make's MODELS= reaches sdenv_models_pin_names through sdenv_models_pin_list), that value's;
        else where the setting is written; else the first file that writes it."""
        given = ("make's", "-e", "the environment")
        if Origin is not None:
            resolved = None if isinstance(value, engine.Unresolved) else self._describe(tag_of(value), name)
            if resolved and resolved[0].startswith(given):
                return resolved
            written = self._describe(Origin.get_tag(raw), name) or resolved
            if written and written[1]:
                for used in sorted(engine.template_references(raw)):
                    source = self._describe(tag_of(variables.get(used)), name) if used in variables else None
                    if source and source[0].startswith(given):
                        return source
                for variable in re.findall(
                    r"lookup\(\s*'(?:ansible\.builtin\.)?env'\s*,\s*'(\w+)'", str(raw)
                ):
                    if os.environ.get(variable):
                        return given_by(name, f"the environment variable {variable}"), False
            if written:
                return written
        found = self._written_in(name, variables)
        return (found, False) if found else (None, False)

    def _written_in(self, name, task_vars):
        """For a value without an origin (null, true/false): the first file that sets it, in Ansible's order
        of precedence: -e, host_vars, the inventory file, group_vars. A name set for several groups or hosts
        in one inventory file is attributed to its first line there."""
        if any(
            re.search(rf"(^|[\s{{,\"']){re.escape(name)}\b", str(e))
            for e in context.CLIARGS.get("extra_vars") or ()
        ):
            return given_by(name, "-e on the command line")
        inventory_dir = Path(task_vars.get("inventory_dir") or ".")
        host = task_vars.get("inventory_hostname", "")
        candidates = [
            *sorted((inventory_dir / "host_vars").glob(f"{host}*")),
            Path(task_vars.get("inventory_file") or "/nonexistent"),
            *sorted((inventory_dir / "group_vars").rglob("*")),
        ]
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*:")
        for path in candidates:
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for file in files:
                if not file.is_file():
                    continue
                try:
                    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
                for number, line in enumerate(lines, 1):
                    if pattern.match(line):
                        return f"{engine.relative_to(str(file), os.getcwd())} line {number}"
        return None

    # --- the fast path of make provision (plugins/module_utils/sdenv_fastpath.py) ---------------------------

    def _fastpath_plan(self, uses, documents, roles, variables, templar, values):
        """{role: {inputs, outputs}}: each role's input digests and the outputs it will fingerprint."""
        role_values = {}
        code = {}
        for use in uses:
            role = use.partition(":")[0]
            if role not in roles:
                continue
            name = "known_good" if role == "snapshot" else role
            names = engine.load_entry_points(documents, [use])
            role_values[name] = {k: engine.plain(values[k]) for k in names if k in values}
            code[name] = fastpath.code_digest([str(roles[role]), str(ROOT / "plugins")])
        outputs = {}
        for name in fastpath.OUTPUT_VALUES:
            if name in values:
                outputs[name] = engine.plain(values[name])
                continue
            try:
                outputs[name] = engine.plain(templar.template(variables[name]))
            except (AnsibleError, KeyError):
                outputs[name] = None
        for values_of_role in role_values.values():
            values_of_role.update({f"output {k}": v for k, v in outputs.items()})
        system = (variables.get("ansible_facts") or {}).get("system")
        # The whole lock, resolved even when this run's tags leave out every role that names it (a run of
        # --tags dummy_user must stamp the same lock digest as a run of all roles).
        lock = values.get("sdenv_lock")
        if lock is None:
            try:
                lock = templar.template(variables["sdenv_lock"])
            except (AnsibleError, KeyError):
                lock = None
        return fastpath.plan(role_values, engine.plain(lock), system, code)

    # --- the host ----------------------------------------------------------------------------------------

    def _resolve(self, options, defaults, facts, task_vars):
        """(variables, templar, values, origins, references): each value this target uses, resolved for this
        host with these facts (as a play that gathered them would have them: ansible_facts and ansible_*)."""
        variables = {
            **defaults,
            **{f"ansible_{k}": v for k, v in facts.items()},
            **task_vars,
            "ansible_facts": facts,
        }
        templar = self._templar.copy_with_new_env(available_variables=variables)
        values, origins, references = {}, {}, {}
        for name in [*options, *rules.EXTRA_VALUES]:
            if name not in variables:
                continue
            raw = variables[name]
            try:
                values[name] = templar.template(raw)
            except AnsibleError as error:
                values[name] = engine.Unresolved(raw, first_line(error))
            origins[name] = self._origin(name, raw, values[name], variables)
            references[name] = engine.template_references(raw)
        return variables, templar, values, origins, references

    @staticmethod
    def _network(values):
        return reach.network_env(
            engine.plain(values.get("sdenv_proxy")), values.get("sdenv_ca_bundle"), os.environ
        )

    @staticmethod
    def _probe_args(resolved, entry_points, probe_sources=False):
        """What preflight_facts must look at besides the facts: the directories root writes in (where they
        resolve to), the ports the target will listen on, and the provision record's entry of the dummy."""
        variables, templar, values = resolved[:3]
        args = {
            "paths": [
                values[name]
                for name in rules.RESOLVED_PLACES
                if isinstance(values.get(name), str) and engine.is_normal_absolute(values[name])
            ]
        }
        if rules.PORT_USERS & entry_points:
            ports = [values.get(name) for name in rules.PORTS]
            args["ports"] = [
                int(p) for p in ports if isinstance(p, (int, str)) and str(p).isdigit() and 0 < int(p) < 65536
            ]
        if probe_sources and entry_points & {"webui:main", "models:main", "comfyui:main", "mac_apps:main"}:
            # The sources the target fetches, probed from the host in the same run (the value checks still
            # come first in what the run says: a bad value is reported before an unreachable source).
            pending = []
            if "models:main" in entry_points:
                pending = model_pending.pending(
                    (values.get("sdenv_lock") or {}).get("models"),
                    values.get("sdenv_models_enabled"),
                    values.get("sdenv_models_bundle_dirs"),
                )
            uses = sorted(entry_points)
            sources = reach.needed_sources(engine.plain(values), uses, [entry["name"] for entry in pending])
            if sources:
                args["sources"] = sources
                args["environment"] = ActionModule._network(values)
        name = values.get("sdenv_user_name")
        if "dummy_user:main" in entry_points and isinstance(name, str):
            with contextlib.suppress(AnsibleError, KeyError):
                args["record"] = {"path": str(templar.template(variables["sdenv_state_file"])), "user": name}
        return engine.plain(args)

    @staticmethod
    def _facts_cache(task_vars):
        """The controller's copy of this host's facts from its previous run (no secrets: platform,
        distribution, user and python facts), beside Ansible's own local files (~/.ansible); pruned by age
        (module_utils/sdenv_facts_cache.py)."""
        name = re.sub(r"[^\w.@-]", "_", str(task_vars.get("inventory_hostname", "")))
        return Path(C.DEFAULT_LOCAL_TMP).parent.parent / "sdenv-preflight-facts" / f"{name}.json"

    @staticmethod
    def _read_cache(path):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _write_cache(path, facts):
        """Only a speed-up: a cache that cannot be written costs the next run a second look, nothing else."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(
                json.dumps(engine.plain(facts), sort_keys=True, default=str), encoding="utf-8"
            )
            os.replace(temporary, path)
        except OSError:
            pass
        facts_cache.prune(path.parent)  # copies of hosts no run has asked about for a month

    @staticmethod
    def _host(probe):
        if probe.get("failed"):
            return {
                "failed": True,
                "msg": _("Could not read this host's facts and accounts: {error}").format(
                    error=probe.get("msg")
                ),
            }
        facts = {k.removeprefix("ansible_"): v for k, v in (probe.get("ansible_facts") or {}).items()}
        system = facts.get("system")
        return {
            "facts": facts,
            "system": system,
            "os_family": facts.get("os_family"),
            "distribution": facts.get("distribution"),
            "accounts": probe.get("accounts") or [],
            "first_regular_uid": DarwinAccounts.first_regular_uid
            if system == "Darwin"
            else parse_login_defs_uid_min(probe.get("login_defs") or ""),
            "home_root": parse_useradd_home(probe.get("useradd_defaults") or ""),
            "admin_group": probe.get("admin_group"),
        }
