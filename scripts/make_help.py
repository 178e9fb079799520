"""`make help`: the targets (`target: ... ## what it does`) and the variables (`# var: NAME=value  meaning`)
of the Makefile and mk/*.mk, each description in the reader's language (plugins/module_utils/sdenv_i18n.py;
English when there is no catalog for it).

The Makefiles stay the one list of targets and variables: a description is the catalog's message id, so a
new or changed one shows in English until it is translated, and tests/unit/test_i18n.py fails until it is.
Standard library only: it runs before the controller's .venv exists.
"""

import os
import re
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins", "module_utils")
)

from sdenv_i18n import _

TARGET = re.compile(r"^([a-z-]+):.*?## (.*)$")
VARIABLE = re.compile(r"^# var: (.+?)\s{2,}(.*)$")


def entries(makefiles):
    """([(target, description)] sorted and unique, [(variable, description)] in file order)."""
    targets, variables = set(), []
    for path in makefiles:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                found = TARGET.match(line)
                if found:
                    targets.add((found.group(1), found.group(2).strip()))
                found = VARIABLE.match(line)
                if found:
                    variables.append((found.group(1), found.group(2).strip()))
    return sorted(targets), variables


def render(makefiles):
    targets, variables = entries(makefiles)
    lines = [_("Usage: make TARGET [VARIABLE=value ...]"), "", _("Targets:")]
    lines += [f"  {name:<16} {_(text)}" for name, text in targets]
    lines += ["", _("Variables:")]
    seen = set()
    for name, text in variables:
        # A variable several targets read (DEEP=1) is listed once, each target's meaning on a line of its own.
        lines.append(f"  {'' if name in seen else name:<16} {_(text)}")
        seen.add(name)
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(sys.argv[1:]))
