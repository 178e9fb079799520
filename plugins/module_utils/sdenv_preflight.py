"""Preflight: every value a make target will use, checked on every host before anything changes.

Where the knowledge lives:
- Which values a target uses, and the type of each: the argument specs of the role entry points the
  target runs (roles/<role>/meta/argument_specs.yml; tests/verify/argument_specs.yml for make verify's
  own settings). The preflight reads them; nothing here repeats a name or a type they already give.
- What a type cannot say (a path must be absolute and not /, a port is 1024-65535, a SHA256 is 64 hex
  digits, the lock's structure, a model named in settings must be in the lock): sdenv_preflight_rules.py,
  as data (rules by setting name, and checks across settings and the host's accounts).

This module is the engine: the type check from a spec, the rule vocabulary, and check(), which returns
one sentence per problem. It is plain Python without Ansible, so unit tests call it with plain data; the
action plugin (plugins/action/sdenv_preflight.py) resolves the values, finds where each was set, reads the
host's accounts and calls check().
"""

import json
import os
import posixpath
import re
from urllib.parse import urlsplit

from sdenv_i18n import N_, _
from sdenv_system_paths import SystemPaths, inside, strictly_inside  # noqa: F401 - re-exported

# Ansible's own words for booleans (module_utils.parsing.convert_bool), so `-e x=yes` stays valid.
TRUE_WORDS = {"yes", "on", "1", "true", "y", "t"}
FALSE_WORDS = {"no", "off", "0", "false", "n", "f"}
# ..._env names a variable and ..._token_hosts where a token may go: no secret.
SECRET_NAME = re.compile(r"(password|token|secret)(?!_env|_hosts)")
# A value set by a vars plugin, set_fact or a lookup carries no origin Ansible recorded, and no file here has it.
UNKNOWN_PLACE = N_("a place the preflight cannot name (not settings.yml, lock.yml, the inventory or -e)")

# --- Problems and sentences -----------------------------------------------------------------------


class Problem:
    """One bad value: `setting` is the dotted path (sdenv_lock.models[1].sha256)."""

    def __init__(self, setting, value, expected, origin=None, text=None, derived=False):
        self.setting, self.value, self.expected = setting, value, expected
        self.origin, self.text, self.derived = origin, text, derived

    def sentence(self):
        if self.text:
            return self.text
        where = self.origin or _(UNKNOWN_PLACE)
        return _("{where} sets {setting} to {value}: expected {expected}.").format(
            where=where, setting=self.setting, value=show(self.value, self.setting), expected=self.expected
        )

    def __repr__(self):
        return f"Problem({self.sentence()!r})"


def show(value, setting=""):
    """A bad value as the user wrote it, short; secrets are never shown."""
    if SECRET_NAME.search(setting):
        return "a value (not shown)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(str(value))
    elif isinstance(value, (list, dict)):
        text = json.dumps(plain(value), ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= 100 else text[:97] + "..."


def plain(value):
    """Ansible's tagged containers as plain ones (for json.dumps and comparisons)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


# --- Types, from the argument specs -----------------------------------------------------------------

TYPE_WORDS = {
    "str": N_("text"),
    "path": N_("a path"),
    "int": N_("a whole number"),
    "float": N_("a number"),
    "bool": N_("true or false"),
    "list": N_("a list"),
    "dict": N_("a mapping of names to values"),
    "raw": N_("a value"),
}


def describe_type(spec):
    kind = spec.get("type", "str")
    if spec.get("choices"):
        return _("one of {choices}").format(choices=", ".join(str(c) for c in spec["choices"]))
    if kind == "list" and spec.get("elements") == "str":
        return _("a list of texts")
    if kind == "list" and spec.get("elements"):
        return _("a list of {elements}s").format(elements=spec["elements"])
    return _(TYPE_WORDS[kind]) if kind in TYPE_WORDS else kind


def convert(value, kind):
    """(True, value as the roles will see it) when `value` is of the spec's type, else (False, None).

    Stricter than Ansible's own conversion where a lenient one hides mistakes: a list is never made by
    splitting a string on commas, and a boolean is never turned into text. Looser only where make's -e
    hands over text: a whole number or a boolean may come as its text.
    """
    if kind in ("str", "path"):
        ok = isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))
        return (ok, value if isinstance(value, str) else str(value)) if ok else (False, None)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return True, int(value)
        return False, None
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        try:
            return (True, float(value)) if isinstance(value, str) else (False, None)
        except ValueError:
            return False, None
    if kind == "bool":
        if isinstance(value, bool):
            return True, value
        word = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if word in TRUE_WORDS:
            return True, True
        if word in FALSE_WORDS:
            return True, False
        return False, None
    if kind == "list":
        return (True, list(value)) if isinstance(value, (list, tuple)) else (False, None)
    if kind == "dict":
        return (True, value) if isinstance(value, dict) else (False, None)
    return True, value


# --- Rules -------------------------------------------------------------------------------------------
#
# A rule checks one value and yields (suffix, value, expected) for each problem, where suffix extends the
# setting's path ("[1].sha256"). Containers recurse, so a problem deep in the lock names its own place.


class Rule:
    expected = "a valid value"

    def problems(self, value, ctx, suffix=""):
        if not self.ok(value, ctx):
            yield suffix, value, self.expected

    def ok(self, value, ctx):
        return True


class Pattern(Rule):
    def __init__(self, regex, expected):
        self.regex, self.expected = re.compile(regex), expected

    def ok(self, value, ctx):
        return isinstance(value, str) and self.regex.fullmatch(value) is not None


class Text(Rule):
    """One line of text (it ends up in a shell file, a passwd field or a table)."""

    def __init__(self, empty=False, forbid="", expected=None, longest=None):
        self.empty, self.forbid, self.longest = empty, forbid, longest
        words = "a line of text" if empty else "a non-empty line of text"
        if longest:
            words += f" of at most {longest} characters"
        if forbid:
            words += " without " + " or ".join(repr(c) for c in forbid)
        self.expected = expected or words

    def ok(self, value, ctx):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return False
        text = str(value)
        if not text.strip() and not self.empty:
            return False
        if self.longest and len(text) > self.longest:
            return False
        return not re.search(r"[\x00-\x1f\x7f]", text) and not any(c in text for c in self.forbid)


class Choice(Rule):
    def __init__(self, *choices):
        self.choices = choices
        self.expected = "one of " + ", ".join(str(c) for c in choices)

    def ok(self, value, ctx):
        return value in self.choices


class Number(Rule):
    """A whole number (or, with whole=False, any number) from low to high."""

    def __init__(self, low=None, high=None, whole=True, expected=None):
        self.low, self.high, self.whole = low, high, whole
        word = "a whole number" if whole else "a number"
        if expected:
            self.expected = expected
        elif low is not None and high is not None:
            self.expected = f"{word} from {low} to {high}"
        elif low is not None:
            self.expected = f"{word} of at least {low}"
        else:
            self.expected = word

    def ok(self, value, ctx):
        kind = "int" if self.whole else "float"
        good, number = convert(value, kind)
        if not good:
            return False
        return (self.low is None or number >= self.low) and (self.high is None or number <= self.high)


class Flag(Rule):
    expected = "true or false"

    def ok(self, value, ctx):
        return convert(value, "bool")[0]


class Nullable(Rule):
    """null (None) or what `rule` accepts; `why` says what null means."""

    def __init__(self, rule, why=""):
        self.rule = rule
        self.expected = f"{rule.expected}, or null{' ' + why if why else ''}"

    def problems(self, value, ctx, suffix=""):
        if value is None:
            return
        for where, bad, words in self.rule.problems(value, ctx, suffix):
            yield where, bad, (self.expected if where == suffix else words)


class EmptyOr(Rule):
    """ "" (the setting is off) or what `rule` accepts; `why` says what "" means."""

    def __init__(self, rule, why="to leave it unset"):
        self.rule, self.why = rule, why
        self.expected = f'{rule.expected}, or "" {why}'

    def problems(self, value, ctx, suffix=""):
        if value in ("", None):
            return
        for where, bad, words in self.rule.problems(value, ctx, suffix):
            yield where, bad, (f'{words}, or "" {self.why}' if where == suffix else words)


class OneOf(Rule):
    """The first rule that accepts the value wins; the words name every alternative."""

    def __init__(self, *rules, expected=None):
        self.rules = rules
        self.expected = expected or ", or ".join(r.expected for r in rules)

    def problems(self, value, ctx, suffix=""):
        if not any(not list(rule.problems(value, ctx, suffix)) for rule in self.rules):
            yield suffix, value, self.expected


class ListOf(Rule):
    """A list, each item checked by `element`; `unique(item)` gives the key no two items may share."""

    def __init__(self, element, unique=None, unique_words="no two entries alike"):
        self.element, self.unique, self.unique_words = element, unique, unique_words
        self.expected = f"a list of which each is {element.expected}"

    def problems(self, value, ctx, suffix=""):
        if not isinstance(value, (list, tuple)):
            yield suffix, value, self.expected
            return
        seen = {}
        for index, item in enumerate(value):
            yield from self.element.problems(item, ctx, f"{suffix}[{index}]")
            if self.unique:
                key = self.unique(item)
                if key is not None and key in seen:
                    yield f"{suffix}[{index}]", plain(item), f"{self.unique_words} ({seen[key]} has the same)"
                seen.setdefault(key, f"[{index}]")


class Fields(Rule):
    """A mapping with known keys: `required` and `optional` map each key to its rule; an unknown key is a
    problem (a typo such as `sha265` must not pass as an absent value). `other`, when given, is the rule
    for keys not named (a mapping whose keys are data, e.g. platforms), with `key` checking their names."""

    def __init__(self, required=None, optional=None, other=None, key=None, what="a mapping"):
        self.required, self.optional = required or {}, optional or {}
        self.other, self.key = other, key
        self.expected = f"{what} with {', '.join(self.required)}" if self.required else what

    def problems(self, value, ctx, suffix=""):
        if not isinstance(value, dict):
            yield suffix, value, self.expected
            return
        missing = [name for name in self.required if name not in value]
        if missing:
            yield suffix, plain(value), f"{self.expected} (it has no {', '.join(missing)})"
        for name, rule in self.required.items():
            if name in value:
                yield from rule.problems(value[name], ctx, f"{suffix}.{name}")
        for name, item in value.items():
            if name in self.required:
                continue
            if name in self.optional:
                yield from self.optional[name].problems(item, ctx, f"{suffix}.{name}")
            elif self.other is not None:
                if self.key is not None and not self.key.ok(name, ctx):
                    yield (
                        f"{suffix}",
                        plain(value),
                        f"{self.expected}; the key {name!r} is not {self.key.expected}",
                    )
                else:
                    yield from self.other.problems(item, ctx, f"{suffix}.{name}")
            else:
                allowed = ", ".join([*self.required, *self.optional])
                yield f"{suffix}.{name}", item, f"no key {name!r} here (known keys: {allowed})"


class Url(Rule):
    def __init__(self, schemes=("http", "https", "file")):
        self.schemes = schemes
        self.expected = "a URL starting with " + " or ".join(f"{s}://" for s in schemes)

    def ok(self, value, ctx):
        if not isinstance(value, str) or re.search(r"\s", value):
            return False
        try:
            parts = urlsplit(value)
        except ValueError:
            return False
        if parts.scheme not in self.schemes:
            return False
        return bool(parts.path.startswith("/")) if parts.scheme == "file" else bool(parts.hostname)


# --- Paths -------------------------------------------------------------------------------------------


def is_normal_absolute(path):
    return (
        isinstance(path, str)
        and path.startswith("/")
        and not path.startswith("//")
        and posixpath.normpath(path) == path
        and "\x00" not in path
    )


class Path(Rule):
    """An absolute, normal path on the host, used or made by the toolkit.

    what: "file" (a program or file the toolkit reads: only its form and that it is not a directory the
    system or another account owns), "place" (a directory the toolkit writes as root: also not inside a
    system tree), "dummy" (a directory the dummy owns: also not inside another person's home), "local" (a
    file on the controller: form only). Where paths stand to each other (the state directory) is a check
    across settings (sdenv_preflight_rules.places_are_apart).
    """

    FORM = "an absolute, normal path (starting with /, without '.', '..', '//' or a trailing /)"

    def __init__(self, what="place"):
        self.what = what
        self.expected = self.FORM

    def problems(self, value, ctx, suffix=""):
        reason = self.reason(value, ctx)
        if reason:
            yield suffix, value, reason

    def reason(self, value, ctx):
        if not is_normal_absolute(value):
            return self.FORM
        if self.what == "local":
            return None
        return ctx.system_paths.problem(value, self.what, ctx.accounts, ctx.user_name, ctx.first_regular_uid)

    @staticmethod
    def in_value(rule, value):
        """(suffix, path) for each host path a value holds under `rule` (a Path, or a list or optional one)."""
        if isinstance(rule, EmptyOr):
            rule = rule.rule
        if isinstance(rule, Path) and rule.what != "local" and isinstance(value, str):
            yield "", value
        elif isinstance(rule, ListOf) and isinstance(rule.element, Path) and isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    yield f"[{index}]", item


# --- The checker ---------------------------------------------------------------------------------------


class Context:
    """What a rule may look at besides its own value."""

    def __init__(self, values, host, system_paths, uses=(), origin_of=None, options=None):
        self.values, self.host, self.system_paths = values, host or {}, system_paths
        self.options = options or {}
        self.uses = set(uses)
        self.failed = set()  # settings already found wrong: checks across settings leave them out
        self.origin_of = origin_of or (lambda setting: None)
        self.accounts = self.host.get("accounts", [])
        self.first_regular_uid = self.host.get("first_regular_uid", 1000)
        user = values.get("sdenv_user_name")
        self.user_name = user if isinstance(user, str) else None

    def account(self, name):
        return next((a for a in self.accounts if a["name"] == name), None)


class Cross:
    """A check over several settings (or a setting and the host). It runs when the target uses every
    setting in `reads` and, if `entry_points` is given, one of those entry points; `check(ctx)` yields
    Problems whose origin the checker fills in from the setting they name."""

    def __init__(self, name, reads, check, entry_points=None):
        self.name, self.reads, self.check, self.entry_points = name, tuple(reads), check, entry_points


def check(
    options,
    values,
    origins,
    rules,
    cross_checks,
    host,
    system_paths,
    uses=(),
    origin_of=None,
    references=None,
):
    """Every problem of one host, as sentences (an empty list when all is well).

    options: {setting: argument spec} the target uses (the union of its entry points).
    values: {setting: value} resolved for this host (absent = not set); Unresolved when its template fails.
    origins: {setting: (where, derived)}: where the value was set, in words, and whether it is derived
      (a role default computed from other settings).
    rules: {setting: Rule or None} (sdenv_preflight_rules.RULES); cross_checks: [Cross].
    host: {"system", "os_family", "distribution", "accounts": [{name, uid, home}], "first_regular_uid",
      "home_root"}.
    origin_of: where a nested value was set, in words (lock entries carry their own line), or None.
    references: {setting: names of the settings its template uses}: a value made from a wrong setting
      (sdenv_webui_dir from sdenv_user_home) is not reported again.
    """

    def where(setting, nested=None):
        """Where a setting was set; for a value inside it (a lock entry), where that value was written."""
        found = origin_of(nested) if origin_of is not None and nested is not None else None
        return found or origins.get(setting, (None, False))[0]

    ctx = Context(
        values, host, system_paths, [entry_point(use) for use in uses], origin_of=where, options=options
    )
    problems = []

    for setting, spec in options.items():
        derived = origins.get(setting, (None, False))[1]
        value = values.get(setting)
        expected = describe_type(spec)
        if value is None:
            if spec.get("required"):
                unset = _(
                    "{setting} is not set (settings.yml, lock.yml, the inventory or -e): expected {expected}."
                )
                unset = unset.format(setting=setting, expected=expected)
                text = None if setting in values else unset
                problems.append(Problem(setting, None, expected, where(setting), text=text, derived=derived))
                ctx.failed.add(setting)
            continue
        if isinstance(value, Unresolved):
            text = _(
                "{where} sets {setting} to {value}, which cannot be resolved ({error}): expected {expected}."
            ).format(
                where=where(setting) or _(UNKNOWN_PLACE),
                setting=setting,
                value=show(value.raw, setting),
                error=value.error,
                expected=expected,
            )
            problems.append(Problem(setting, value.raw, expected, text=text, derived=derived))
            ctx.failed.add(setting)
            continue
        good, converted = convert(value, spec.get("type", "str"))
        if good and spec.get("choices") and converted not in spec["choices"]:
            good = False
        if good and spec.get("type") == "list" and spec.get("elements") in ("str", "path"):
            good = all(convert(item, spec["elements"])[0] for item in converted)
        if not good:
            problems.append(Problem(setting, value, expected, where(setting), derived=derived))
            ctx.failed.add(setting)
            continue
        rule = rules.get(setting)
        if rule is None:
            continue
        checked = value if spec.get("type") in ("list", "dict") else converted
        for suffix, bad, words in rule.problems(checked, ctx):
            origin = where(setting, bad if suffix else None)
            problems.append(Problem(setting + suffix, bad, words, origin, derived=derived))
            ctx.failed.add(setting)

    for cross in cross_checks:
        if not all(name in options and values.get(name) is not None for name in cross.reads):
            continue
        if cross.entry_points is not None and not set(cross.entry_points) & ctx.uses:
            continue
        if ctx.failed & set(cross.reads):
            continue  # a value that is itself wrong already has its sentence
        for problem in cross.check(ctx):
            base = base_of(problem.setting)
            if problem.origin is None:
                problem.origin = where(base, problem.value if problem.setting != base else None)
            problem.derived = origins.get(base, (None, False))[1]
            problems.append(problem)
            ctx.failed.add(base)

    # A value made from a wrong setting says nothing new; nor does a derived value (a role default computed
    # from settings) while any setting is at fault.
    wrong = {base_of(p.setting) for p in problems}
    references = references or {}
    problems = [
        p
        for p in problems
        if not (set(references.get(base_of(p.setting), ())) & (wrong - {base_of(p.setting)}))
    ]
    own = [p for p in problems if not p.derived]
    return [p.sentence() for p in (own or problems)]


def entry_point(use):
    """ "models" and "models:main" name the same entry point."""
    return use if ":" in use else use + ":main"


def base_of(setting):
    """sdenv_lock.models[1].sha256 -> sdenv_lock"""
    return re.split(r"[.\[]", setting)[0]


def template_references(value):
    """The sdenv_ settings a (possibly nested) value's templates use."""
    found = set()
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            found.update(re.findall(r"\b(sdenv_[a-z0-9_]+)", value))
    elif isinstance(value, dict):
        for item in value.values():
            found |= template_references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= template_references(item)
    return found


class Unresolved:
    """A value whose template could not be resolved (an undefined variable, a failing lookup)."""

    def __init__(self, raw, error):
        self.raw, self.error = raw, error


def load_entry_points(spec_documents, uses):
    """{setting: spec} for the entry points in `uses` ("role" = its main, "role:entry"), from the parsed
    argument_specs documents {role: document}. A setting in several entry points keeps its first spec."""
    options = {}
    for use in uses:
        role, _, entry = use.partition(":")
        document = spec_documents[role]
        entries = (document or {}).get("argument_specs", {})
        if (entry or "main") not in entries:
            raise KeyError(f"{role} has no entry point {entry or 'main'} in its argument specs")
        for name, spec in (entries[entry or "main"].get("options") or {}).items():
            options.setdefault(name, dict(spec))
    return options


def selected_by_tags(uses, run_tags, skip_tags, tagged_roles):
    """The entry points a run with these --tags/--skip-tags reaches: provision tags each role with its name,
    so `--tags dummy_user` checks only what dummy_user uses. Entry points of untagged parts always count."""
    run_tags, skip_tags = set(run_tags or ["all"]), set(skip_tags or [])
    chosen = []
    for use in uses:
        role = use.partition(":")[0]
        if role in tagged_roles and (role in skip_tags or not ({"all", role} & run_tags)):
            continue
        chosen.append(use)
    return chosen


def home_of_new_account(name, system, home_root):
    """Where the platform makes a new account's home: /Users/NAME on macOS, HOME/NAME (useradd's default,
    /home) on Linux; the dummy_user role never chooses another one."""
    return posixpath.join("/Users" if system == "Darwin" else (home_root or "/home"), name)


def relative_to(path, base):
    """path shown from base when it lies inside it (the repository's files), else as it is."""
    try:
        relative = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
