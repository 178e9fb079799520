"""make's step before every playbook: the inventory exists and parses, has hosts, and LIMIT matches some.

ansible-playbook only warns about a missing or unparsable inventory and a LIMIT that matches nothing, then
runs over no host and exits 0, so a script sees success. ansible.cfg makes those errors for runs by hand
(unparsed_is_failed, any_unparsed_is_failed, host_pattern_mismatch); this says which, in one sentence,
using Ansible's own inventory parser and pattern matching (nothing here parses an inventory itself).

Usage: inventory_check.py INVENTORY LIMIT -- .venv/bin/ansible-playbook ARG...
Prints one sentence and exits 2 on a problem; otherwise runs ansible-playbook in this same process (after
Ansible's own controller set-up, exactly as the ansible-playbook script does), so make's recipes keep its
exit status and the check costs no second start of Ansible.
"""

import os
import re
import sys

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


def problem(inventory, limit):
    """One sentence saying what is wrong with INVENTORY and LIMIT, or None."""
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
        return _problem(inventory, limit, failures)
    finally:
        del display.error_as_warning, display.warning


def _problem(inventory, limit, failures):
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
    return None


def main(argv):
    if len(argv) < 4 or argv[2] != "--" or os.path.basename(argv[3]) != "ansible-playbook":
        print(
            "usage: inventory_check.py INVENTORY LIMIT -- .venv/bin/ansible-playbook ARG...", file=sys.stderr
        )
        return 2
    inventory, limit, command = argv[0], argv[1], argv[3:]
    sentence = early_problem(inventory)
    if not sentence:
        # Ansible's controller set-up comes first, as in the ansible-playbook script.
        from ansible.cli.playbook import PlaybookCLI

        sentence = problem(inventory, limit)
    if sentence:
        print(sentence, file=sys.stderr)
        return 2
    sys.argv = command
    return PlaybookCLI.cli_executor(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
