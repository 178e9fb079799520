"""plugins/callback/sdenv_stdout.py: a failure's sentence once, no "NO MORE HOSTS LEFT" banners."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- name: First play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Fail with a sentence
      ansible.builtin.fail:
        msg: |-
          The one sentence that says why.
          A second sentence, long enough that a YAML dump would fold it, naming 'a quoted value' and /a/path/that/goes/on/and/on/for/a/while/so/the/line/is/well/past/eighty/columns.
- name: Second play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Never reached
      ansible.builtin.debug:
        msg: unreachable
"""


def run_playbook(tmp_path, *extra, text=PLAYBOOK):
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            *extra,
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_failure_sentence_printed_once_without_banners(tmp_path):
    result = run_playbook(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("The one sentence that says why.") == 1, output
    assert "NO MORE HOSTS LEFT" not in output and "PLAY RECAP" in output, output
    # Each sentence on a line of its own, as written: never folded, never re-quoted (tests and users grep it).
    assert (
        "  A second sentence, long enough that a YAML dump would fold it, naming 'a quoted value' and "
        "/a/path/that/goes/on/and/on/for/a/while/so/the/line/is/well/past/eighty/columns.\n" in output
    ), output


def test_verbose_run_keeps_the_exception_detail(tmp_path):
    """ARGS=-v shows the exception block again (with where the task is), as Ansible's default does."""
    result = run_playbook(tmp_path, "-v")
    output = result.stdout + result.stderr
    assert output.count("The one sentence that says why.") == 2, output


def test_a_loop_item_failure_prints_its_sentence_unfolded(tmp_path):
    loop = """
- name: Loop
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Fail per item
      ansible.builtin.fail:
        msg: "could not reach {{ item }} (Connection refused): add a reachable mirror URL or a local bundle directory holding it to this model's sources"
      loop: [one.example, two.example]
"""
    result = run_playbook(tmp_path, text=loop)
    assert "failed: [localhost] (item=two.example)" in result.stdout, result.stdout
    assert (
        "  could not reach two.example (Connection refused): add a reachable mirror URL or a local bundle "
        "directory holding it to this model's sources\n" in result.stdout
    ), result.stdout


def test_the_run_ends_with_one_closing_sentence_in_the_readers_language(tmp_path, monkeypatch):
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    english = run_playbook(tmp_path).stdout
    assert english.rstrip().splitlines()[-1] == (
        "Stopped with errors on 1 of 1 host: localhost. The message above says why and what to do."
    )
    # Ansible refuses to start under a locale the machine has not generated (LANG=ja_JP.UTF-8 on a bare
    # Debian): LANGUAGE picks the messages' language without it (README says so).
    monkeypatch.setenv("LANGUAGE", "ja")
    japanese = run_playbook(tmp_path).stdout
    assert japanese.rstrip().splitlines()[-1] == (
        "1 台のうち 1 台でエラーが起きて止まりました: localhost。理由と対処は上のメッセージにあります。"
    )


def test_the_closing_sentence_of_a_run_without_errors(monkeypatch):
    sys.path.insert(0, str(ROOT / "plugins" / "callback"))
    import sdenv_stdout

    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")
    assert sdenv_stdout.closing_summary(["a", "b"], set()) == "Finished without errors on all 2 hosts."
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    assert (
        sdenv_stdout.closing_summary(["a", "b"], set())
        == "完了しました。2 台のホストすべてでエラーはありません。"
    )
    assert sdenv_stdout.closing_summary([], set()) == ""


def test_no_closing_verdict_when_checks_follow_a_clean_run(monkeypatch):
    """make verify's playbook only prepares the checks: its clean end says nothing (the report is the verdict),
    while a failure there still ends with the sentence."""
    sys.path.insert(0, str(ROOT / "plugins" / "callback"))
    import sdenv_stdout

    class Stats:
        def __init__(self, failures):
            self.processed, self.failures, self.dark = {"a": 1}, failures, {}

    shown = []
    callback = sdenv_stdout.CallbackModule()
    monkeypatch.setattr(callback._display, "display", lambda line, **kw: shown.append(line))
    monkeypatch.setattr(sdenv_stdout.DefaultCallback, "v2_playbook_on_stats", lambda self, stats: None)
    monkeypatch.setenv("LANGUAGE", "en")
    monkeypatch.setenv("SDENV_MORE_FOLLOWS", "1")
    callback.v2_playbook_on_stats(Stats({}))
    assert shown == []
    callback.v2_playbook_on_stats(Stats({"a": 1}))
    assert shown and shown[-1].startswith("Stopped with errors on 1 of 1 host: a.")
