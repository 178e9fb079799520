"""Japanese for the guide's readers: the catalog (locale/ja/LC_MESSAGES/sdenv.po), the `_()` helper, and what
reads it (make help, the preflight's sentences, the verify report's headings), rendered in both languages.
The catalog never drifts: every message the code passes to `_()`, `N_()` or `ngettext()`, and every `make
help` line, must have a translation with the same {fields}."""

import ast
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "verify"))
sys.path.insert(0, str(ROOT / "scripts"))

import make_help  # noqa: E402
import sdenv_i18n  # noqa: E402
import sdenv_preflight  # noqa: E402
import verify_report  # noqa: E402

CATALOG = ROOT / "locale" / "ja" / "LC_MESSAGES" / "sdenv.po"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
SOURCES = [
    *(path for path in ROOT.glob("plugins/**/*.py") if path.name != "sdenv_i18n.py"),
    *ROOT.glob("roles/*/module_utils/**/*.py"),
    *ROOT.glob("roles/*/library/*.py"),
    *ROOT.glob("tests/verify/*.py"),
    *ROOT.glob("scripts/*.py"),
]
MAKEFILES = [ROOT / "Makefile", *sorted(ROOT.glob("mk/*.mk"))]


def messages_in_code():
    """{msgid: "file:line"} of every literal passed to _(), N_() or ngettext()."""
    found = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            # ngettext's entry is keyed by its singular (its plural is msgid_plural in the same entry).
            count = {"_": 1, "N_": 1, "ngettext": 1}.get(name, 0)
            for arg in node.args[:count]:
                # A name (_(UNKNOWN_PLACE)) is data marked with N_() where it is defined, found there.
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.setdefault(arg.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def messages_in_help():
    targets, variables = make_help.entries(MAKEFILES)
    fixed = make_help.render([])  # the headings only
    return {text: "make help" for _name, text in targets + variables} | dict.fromkeys(
        [line for line in fixed.splitlines() if line], "make help"
    )


@pytest.fixture
def japanese(monkeypatch):
    for name in sdenv_i18n.LANGUAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")


@pytest.fixture
def english(monkeypatch):
    for name in sdenv_i18n.LANGUAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")


def fields(text):
    return sorted(re.findall(r"\{(\w*)\}", text))


def test_every_message_in_the_code_and_make_help_is_translated_with_the_same_fields():
    catalog = sdenv_i18n.parse_po(CATALOG.read_text(encoding="utf-8"))
    wanted = {**messages_in_code(), **messages_in_help()}
    assert len(wanted) > 60, "the extraction found too few messages: it is broken"
    missing = sorted(f"{where}: {msgid!r}" for msgid, where in wanted.items() if msgid not in catalog)
    assert not missing, "not in locale/ja/LC_MESSAGES/sdenv.po:\n" + "\n".join(missing)
    for msgid, translated in catalog.items():
        if msgid == "":
            continue
        for text in translated if isinstance(translated, list) else [translated]:
            assert fields(text) == fields(msgid), f"{msgid!r}: the translation's {{fields}} differ"
            assert JAPANESE.search(text) or not JAPANESE.search(msgid), msgid


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (Debian package gettext) not installed")
def test_the_catalog_is_valid_for_gettexts_own_tools(tmp_path):
    subprocess.run(
        ["msgfmt", "--check", "-o", str(tmp_path / "sdenv.mo"), str(CATALOG)], check=True, capture_output=True
    )


def test_the_language_comes_from_gettexts_variables_in_their_order():
    assert sdenv_i18n.languages({"LANG": "ja_JP.UTF-8"}) == ["ja_JP", "ja"]
    assert sdenv_i18n.languages({"LC_ALL": "ja_JP", "LANG": "en_US.UTF-8"}) == ["ja_JP", "ja"]
    assert sdenv_i18n.languages({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}) == []
    assert sdenv_i18n.languages({"LANGUAGE": "fr:ja", "LANG": "C"}) == ["fr", "ja"]
    assert sdenv_i18n.languages({}) == []


def test_the_po_parser_reads_multiline_entries_plurals_and_skips_fuzzy_ones():
    text = (
        'msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=1; plural=0;\\n"\n\n'
        'msgid "a "\n"b"\nmsgstr "\\u3042 "\n"\\"x\\""\n\n'
        '#, fuzzy\nmsgid "old"\nmsgstr "古い"\n\n'
        'msgid "one {n}"\nmsgid_plural "many {n}"\nmsgstr[0] "{n} 個"\n\n'
        'msgid "untranslated"\nmsgstr ""\n'
    )
    entries = sdenv_i18n.parse_po(text)
    assert entries["a b"] == 'あ "x"'
    assert entries["one {n}"] == ["{n} 個"]
    assert "old" not in entries and "untranslated" not in entries


def test_a_language_without_a_catalog_and_a_host_without_the_locale_directory_get_english(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LANGUAGE", raising=False)
    assert sdenv_i18n._("Generated images") == "Generated images"
    # On a host the helper runs from an ansiballz zip, with no locale/ beside it: a copy alone in a directory.
    (tmp_path / "mod").mkdir()
    shutil.copy(sdenv_i18n.__file__, tmp_path / "mod" / "sdenv_i18n_on_host.py")
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    on_host = importlib.import_module("sdenv_i18n_on_host")
    assert on_host._("Generated images") == "Generated images"
    assert (
        on_host.ngettext("{count} more check fails because of it", "x", 1)
        == "{count} more check fails because of it"
    )


def help_text(lang):
    env = {"PATH": "/usr/bin:/bin", "LANG": lang}
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_make_help_is_japanese_under_a_japanese_locale_and_english_otherwise():
    english, japanese = help_text("C.UTF-8"), help_text("ja_JP.UTF-8")
    assert english.startswith("Usage: make TARGET") and "Targets:" in english
    assert "Bring every inventory host to the pinned state" in english
    assert japanese != english
    assert japanese.startswith("使い方: make ターゲット")
    assert "インベントリのすべてのホストを、ピン留めした状態にそろえます" in japanese
    # Every target and variable line is translated; the names (provision, DEEP=1) stay as they are.
    lines = [line for line in japanese.splitlines() if line.startswith("  ")]
    assert lines and all(JAPANESE.search(line) for line in lines), [
        line for line in lines if not JAPANESE.search(line)
    ]
    assert [line.split()[0] for line in lines if not line.startswith("   ")] == [
        line.split()[0]
        for line in english.splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]


def test_a_preflight_sentence_in_both_languages(english, monkeypatch):
    spec = {"sdenv_webui_port": {"type": "int", "required": True}}

    def sentences():
        return sdenv_preflight.check(spec, {}, {}, {}, [], {}, [])

    [in_english] = sentences()
    assert in_english == (
        "sdenv_webui_port is not set (settings.yml, lock.yml, the inventory or -e): expected a whole number."
    )
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    [in_japanese] = sentences()
    assert in_japanese != in_english
    assert in_japanese.startswith("sdenv_webui_port が設定されていません") and "整数" in in_japanese


def test_the_report_headings_in_both_languages(english, monkeypatch, tmp_path):
    recorded = json.loads((ROOT / "tests" / "fixtures" / "verify_runs" / "failing-live.json").read_text())
    image = {**recorded["images"][0], "path": str(tmp_path / "a.png")}

    def page():
        return verify_report.html_page(
            recorded["rows"], [image], verify_report.page_title("t"), str(tmp_path)
        )

    in_english = page()
    assert "What failed, by root cause" in in_english and '<html lang="en">' in in_english
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    in_japanese = page()
    assert in_japanese != in_english and '<html lang="ja">' in in_japanese
    for heading in ("失敗したもの（根本原因ごと）", "生成された画像", "studio-1 の全 53 件のチェック"):
        assert heading in in_japanese
    assert "studio-1: 53 件中 4 件のチェックが失敗しています（根本原因 2 件。" in in_japanese
    text = verify_report.terminal_text(recorded["rows"], "/r/index.html", None)
    assert "ほかに 2 件のチェックがこれに続いて失敗しています" in text and text.endswith(
        "Report: /r/index.html"
    )
