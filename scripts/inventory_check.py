"""make's step before every playbook: the inventory exists and parses, has hosts, and LIMIT matches some.

ansible-playbook only warns about a missing or unparsable inventory and a LIMIT that matches nothing, then
runs over no host and exits 0, so a script sees success. ansible.cfg makes those errors for runs by hand
(unparsed_is_failed, any_unparsed_is_failed, host_pattern_mismatch); this says which, in one sentence,
using Ansible's own inventory parser and pattern matching (nothing here parses an inventory itself).

Usage: inventory_check.py INVENTORY LIMIT -- .venv/bin/ansible-playbook ARG...
Prints one sentence and exits 2 on a problem; otherwise runs ansible-playbook in this same process (after
Ansible's own controller set-up, exactly as the ansible-playbook script does), so make's recipes keep its
exit status and the check costs no second start of Ansible.

make's values reach ansible-playbook here, never through a shell command line (where a quote or a `$(...)`
in a value would break or run): the argument MAKE_ARGS_HERE stands for ARGS (the environment's SDENV_VAR_ARGS,
split like a shell would but never run by one; an option that would skip the preflight is refused) followed
by one `-e` JSON document of the environment's SDENV_E_<name> values (extra variable <name>, as given) and
SDENV_EPATH_<name> values (a path, made absolute from make's directory).
"""

import json
import os
import re
import shlex
import sys

MAKE_ARGS_HERE = "--sdenv-make-args"
# ansible-playbook options that would run a play without its first task, the preflight (tagged `always`).
# argparse accepts any unambiguous prefix of a long option (--start-at), so prefixes count too.
SKIPS_THE_PREFLIGHT = {
    "--start-at-task": "starts after the preflight",
    "--step": "lets the preflight be answered away",
}
SKIPPED_TAGS_THAT_SKIP_IT = {"always", "all"}

EXAMPLE = "inventory/localhost.yml is this machine; inventory/examples/fleet.yml shows several"


def cause(failures, source):
    """The most telling of the inventory plugins' failures for `source`, in a few words."""
    yaml_file = re.search(r"\.(ya?ml|json)$", source or "") is not None
    preferred = ("yaml", "auto") if yaml_file else ("ini", "yaml", "auto")
    ranked = sorted(failures, key=lambda f: preferred.index(f[0]) if f[0] in preferred else len(preferred))
    if not ranked:
        return "no inventory plugin can read it"
    message = ranked[0][1]
    message = re.sub(r"<class '[^']*(List|list)'>", "a list", message)
    message = re.sub(r"<class '[^']*(Dict|dict)'>", "a mapping", message)
    message = re.sub(r"<class '[^']*(Str|str)'>", "text", message)
    line = next((f[2] for f in failures if f[2]), None)
    message = message.rstrip(".")
    return f"{message} (line {line})" if line else message


def early_problem(inventory):
    """What needs no Ansible to see."""
    if not inventory.strip():
        return f"INVENTORY is empty: give an inventory file ({EXAMPLE})."
    if "," not in inventory and not os.path.exists(inventory):
        return f"The inventory {inventory} (INVENTORY=) does not exist: give an existing file ({EXAMPLE})."
    return None


def problem(inventory, limit, chosen=None):
    """One sentence saying what is wrong with INVENTORY and LIMIT, or None. `chosen`, a list, receives the
    names of the hosts the run will act on (the inventory's, narrowed by LIMIT)."""
    early = early_problem(inventory)
    if early:
        return early
    from ansible.utils.display import Display

    failures = []
    display = Display()

    def failed(msg, exception=None, *args, **kwargs):
        plugin = re.search(r"with '([^']+)' plugin", str(msg))
        origin = getattr(exception, "obj", None)
        failures.append(
            (
                plugin.group(1) if plugin else "",
                str(getattr(exception, "message", None) or exception or msg).strip().splitlines()[0],
                getattr(origin, "line_num", None),
            )
        )

    # Ansible's warnings are what this replaces: collected, never printed (and given back afterwards).
    display.error_as_warning = failed
    display.warning = lambda *args, **kwargs: None
    try:
        return _problem(inventory, limit, failures, chosen) or vars_problem(inventory)
    finally:
        del display.error_as_warning, display.warning


# The files Ansible's host_group_vars plugin reads next to an inventory (its own filter: these suffixes).
VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


def vars_files(inventory):
    """settings.yml, lock.yml and every other group_vars/host_vars file Ansible will read for `inventory`."""
    if "," in inventory and not os.path.exists(inventory):
        return
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    for sub in ("group_vars", "host_vars"):
        for directory, dirnames, filenames in os.walk(os.path.join(base, sub), followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and os.path.splitext(name)[1] in VARS_SUFFIXES:
                    yield os.path.join(directory, name)


def vars_problem(inventory):
    """One sentence naming the file and line of a YAML error in the inventory's variable files, or None.

    Ansible reads them only when a play starts, and then prints the parser's words without the file or line.
    """
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader

    loader = DataLoader()
    for path in vars_files(inventory):
        try:
            loader.load_from_file(path)
        except AnsibleError as error:
            line = getattr(error.obj, "line_num", None)
            cause = error.__cause__
            what = getattr(cause, "problem", None) or str(error.message).removeprefix("YAML parsing failed: ")
            context, mark = getattr(cause, "context", None), getattr(cause, "context_mark", None)
            began = (
                f" ({context}, begun on line {mark.line + 1})"
                if context and mark and mark.line + 1 != line
                else ""
            )
            shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
            return (
                f"{shown}{f' line {line}' if line else ''} cannot be read as YAML: {what.rstrip('.')}{began};"
                " fix it, then run again."
            )
    return None


def _problem(inventory, limit, failures, chosen=None):
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager, split_host_pattern
    from ansible.parsing.dataloader import DataLoader

    try:
        inventory_manager = InventoryManager(loader=DataLoader(), sources=[inventory])
    except AnsibleError as error:
        source = re.search(r"inventory source (.+)$", str(error.message))
        source = source.group(1) if source else inventory
        shown = inventory if source == os.path.abspath(inventory) else source
        return (
            f"The inventory {shown} (INVENTORY=) cannot be read: {cause(failures, source)}; fix it"
            f" ({EXAMPLE})."
        )
    hosts = inventory_manager.list_hosts("all")
    if not hosts:
        return f"The inventory {inventory} (INVENTORY=) lists no host: add one under all: hosts: ({EXAMPLE})."
    if not limit.strip():
        if chosen is not None:
            chosen.extend(h.name for h in hosts)
        return None
    names = ", ".join(sorted(h.name for h in hosts)[:10]) + (", ..." if len(hosts) > 10 else "")
    for part in split_host_pattern(limit):
        pattern = part.lstrip("&!")
        if not pattern or pattern.startswith("@"):
            continue
        try:
            matched = inventory_manager.list_hosts(pattern)
        except AnsibleError:
            matched = []
        if not [h for h in matched if h in hosts]:
            return (
                f"LIMIT={limit} names {pattern}, which matches no host of the inventory {inventory}:"
                f" expected a host or group of it ({names})."
            )
    inventory_manager.subset(limit)
    if not inventory_manager.list_hosts("all"):
        return f"LIMIT={limit} leaves no host of the inventory {inventory}: expected a pattern that keeps one ({names})."
    if chosen is not None:
        chosen.extend(h.name for h in inventory_manager.list_hosts("all"))
    return None


# Ansible's own default: a run over fewer hosts still gets as many workers (a task delegated to the
# controller runs in its host's worker, so more would sit idle).
MIN_FORKS = 5


def forks_args(host_count, args):
    """`--forks N` with N the number of hosts the run acts on (at least MIN_FORKS): every host of a fleet goes
    at once, never in batches of a fixed number. [] when ARGS gives its own (-f N, -fN, --forks N, --forks=N,
    or an unambiguous prefix of --forks)."""
    for arg in args:
        name = arg.partition("=")[0]
        if (arg.startswith("-f") and not arg.startswith("--")) or (
            len(name) > 3 and "--forks".startswith(name)
        ):
            return []
    return ["--forks", str(max(host_count, MIN_FORKS))]


def preflight_skipper(args, text):
    """One sentence when ARGS would run a playbook without its preflight, else None."""
    for index, arg in enumerate(args):
        name, has_value, value = arg.partition("=")
        if not name.startswith("--") or len(name) < 4:
            continue
        for option, why in SKIPS_THE_PREFLIGHT.items():
            if option.startswith(name):
                return (
                    f"ARGS={text} gives {arg}, which {why} (the checks every value gets before"
                    " anything changes): leave it out of ARGS; use --tags or LIMIT to narrow a run."
                )
        if "--skip-tags".startswith(name):
            tags = value if has_value else (args[index + 1] if index + 1 < len(args) else "")
            skipped = {t.strip() for t in tags.split(",")} & SKIPPED_TAGS_THAT_SKIP_IT
            if skipped:
                return (
                    f"ARGS={text} skips the tag {sorted(skipped)[0]}, which carries the preflight (the"
                    " checks every value gets before anything changes): leave it out of --skip-tags."
                )
    return None


def fleet_problem(environ):
    """One sentence when SERIAL= or MAX_FAIL= is not what Ansible's serial / max_fail_percentage take, else
    None: Ansible would otherwise stop with a traceback once the preflight has passed."""
    serial, max_fail = environ.get("SDENV_VAR_SERIAL", ""), environ.get("SDENV_VAR_MAX_FAIL", "")
    if serial and not re.fullmatch(r"[1-9][0-9]{0,5}|([1-9][0-9]?|100)%", serial):
        return f"SERIAL={serial} is not a host count or percent: give a whole number such as 2, or 1%-100% such as 25%."
    if max_fail and not re.fullmatch(r"[0-9]|[1-9][0-9]|100", max_fail):
        return f"MAX_FAIL={max_fail} is not a percent: give a whole number from 0 to 100 (0 stops at the first failure)."
    return None


def make_args(environ):
    """(the arguments MAKE_ARGS_HERE stands for, None) or (None, a sentence saying what is wrong with ARGS)."""
    text = environ.get("SDENV_VAR_ARGS", "")
    try:
        args = shlex.split(text)
    except ValueError as error:
        return None, f"ARGS={text} cannot be split into arguments ({error}): balance its quotes."
    sentence = preflight_skipper(args, text) or fleet_problem(environ)
    if sentence:
        return None, sentence
    extra = {}
    for key, value in sorted(environ.items()):
        if key.startswith("SDENV_E_"):
            extra[key.removeprefix("SDENV_E_")] = value
        elif key.startswith("SDENV_EPATH_") and value:  # empty: not given (make BUNDLE= unset)
            extra[key.removeprefix("SDENV_EPATH_")] = os.path.abspath(value)
    return args + (["-e", json.dumps(extra)] if extra else []), None


def main(argv):
    if len(argv) < 4 or argv[2] != "--" or os.path.basename(argv[3]) != "ansible-playbook":
        print(
            "usage: inventory_check.py INVENTORY LIMIT -- .venv/bin/ansible-playbook ARG...", file=sys.stderr
        )
        return 2
    inventory, limit, command = argv[0], argv[1], argv[3:]
    if MAKE_ARGS_HERE in command:
        args, sentence = make_args(os.environ)
        if sentence:
            print(sentence, file=sys.stderr)
            return 2
        at = command.index(MAKE_ARGS_HERE)
        command = command[:at] + args + command[at + 1 :]
    sentence = early_problem(inventory)
    chosen = []
    if not sentence:
        # Ansible's controller set-up comes first, as in the ansible-playbook script.
        from ansible.cli.playbook import PlaybookCLI

        sentence = problem(inventory, limit, chosen)
    if sentence:
        print(sentence, file=sys.stderr)
        return 2
    command = command[:1] + forks_args(len(chosen), command[1:]) + command[1:]
    sys.argv = command
    return PlaybookCLI.cli_executor(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
