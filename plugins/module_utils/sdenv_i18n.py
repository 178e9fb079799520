"""Translations of what a user reads: `_("English sentence")` returns it in the reader's language.

The catalogs are gettext .po files under the repository (locale/<lang>/LC_MESSAGES/sdenv.po), read as they
are committed: a small parser below turns one into a gettext translations object, so there is no compiled
.mo to build, install or let go stale, and nothing beyond the standard library is needed (Debian's
gettext package, msgfmt, is not required; the tests run `msgfmt --check` on the catalog when it is there).
English, the text in the code, is the fallback for a language without a catalog and for any message a
catalog lacks.

The language is the reader's: gettext's own order of LANGUAGE, LC_ALL, LC_MESSAGES, LANG (so `LANG=ja_JP.UTF-8`
and `LC_ALL=ja_JP` both give Japanese; `C` and `POSIX` give English).

Where translation happens: on the controller, where the reader sits. make help, the preflight (an action
plugin), the run's closing summary and the verify report all run there. A module on a host runs as an
ansiballz zip without the locale directory and under the host's locale (Ansible sets its own for modules),
which is not the reader's: there `_()` finds no catalog and returns the English text unchanged, so a module
may import this helper safely, and its messages are translated, when they need to be, by the controller-side
code that shows them (the action plugin), with the same catalog.

Message ids are whole sentences with `{name}` fields filled after translation (`_("... {path} ...").format(
path=path)`), so a translator can move a field where Japanese wants it. tests/unit/test_i18n.py checks that
every `_()` / `N_()` message in the code, and every `make help` line, is in each catalog (they never drift).
"""

import ast
import gettext
import os

DOMAIN = "sdenv"
# plugins/module_utils/ -> the repository root -> locale/. Absent inside an ansiballz zip (see above).
LOCALE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "locale"
)
LANGUAGE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

_cache = {}


def languages(environ=None):
    """The reader's languages, most wanted first, as catalog names ("ja_JP.UTF-8" -> "ja_JP", "ja")."""
    environ = os.environ if environ is None else environ
    for variable in LANGUAGE_VARIABLES:
        value = environ.get(variable)
        if not value:
            continue
        found = []
        for name in value.split(":"):
            name = name.split(".")[0].split("@")[0]
            if name in ("C", "POSIX", ""):
                continue
            found += [name, name.split("_")[0]]
        return list(dict.fromkeys(found))
    return []


def _unquote(text):
    """One "..." line of a .po file as its string (the C escapes the .po format allows)."""
    return ast.literal_eval(text)


def parse_po(text):
    """{msgid: msgstr} of a .po file's translated entries (plural entries: msgid -> [msgstr[0], ...]);
    fuzzy and untranslated entries are left out, as msgfmt leaves them out. Entries are separated by blank
    lines, as gettext's tools write them."""
    entries = {}
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields, key, fuzzy = {}, None, False
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            if not line or line.startswith("#"):
                continue
            if line.startswith('"') and key is not None:
                fields[key] += _unquote(line)
                continue
            key, _, rest = line.partition(" ")
            fields[key] = _unquote(rest)
        msgid = fields.get("msgid")
        if msgid is None or (fuzzy and msgid != ""):
            continue
        if "msgid_plural" in fields:
            forms = [fields[k] for k in sorted(k for k in fields if k.startswith("msgstr["))]
            if forms and all(forms):
                entries[msgid] = forms
        elif fields.get("msgstr") or msgid == "":
            entries[msgid] = fields.get("msgstr", "")
    return entries


class PoTranslations(gettext.NullTranslations):
    """gettext's translations interface over a parsed .po file (plural forms from its header)."""

    def __init__(self, path):
        super().__init__()
        with open(path, encoding="utf-8") as handle:
            self._catalog = parse_po(handle.read())
        header = self._catalog.pop("", "")
        self._plural = lambda n: int(n != 1)
        for line in header.splitlines():
            if line.lower().startswith("plural-forms:"):
                rule = line.split("plural=", 1)[1].rstrip(";").strip() if "plural=" in line else ""
                if rule:
                    self._plural = gettext.c2py(rule)

    def gettext(self, message):
        found = self._catalog.get(message)
        return found if isinstance(found, str) else message

    def ngettext(self, singular, plural, n):
        found = self._catalog.get(singular)
        if isinstance(found, list):
            index = self._plural(n)
            return found[index] if index < len(found) else found[-1]
        return singular if n == 1 else plural


def translations(environ=None, locale_dir=None):
    """The catalog for the reader's first language that has one, else English (NullTranslations)."""
    locale_dir = locale_dir or LOCALE_DIR
    for language in languages(environ):
        path = os.path.join(locale_dir, language, "LC_MESSAGES", DOMAIN + ".po")
        if path not in _cache:
            _cache[path] = PoTranslations(path) if os.path.isfile(path) else None
        if _cache[path] is not None:
            return _cache[path]
    return gettext.NullTranslations()


def _(message):
    """message in the reader's language (read from the environment at each call: tests switch it)."""
    return translations().gettext(message)


def ngettext(singular, plural, n):
    return translations().ngettext(singular, plural, n)


def N_(message):
    """Marks a message for the catalog where it is defined as data; `_()` translates it where it is shown."""
    return message
