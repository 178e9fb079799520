"""A real run in Japanese: `make provision` with a bad value, the reader's language set, stops in the
preflight with the sentence in Japanese and ends with the Japanese closing line; English without it.

LANGUAGE=ja is the switch here: LANG=ja_JP.UTF-8 would need the ja_JP locale generated on this machine,
without which Ansible refuses to start (README, "Variables": the same note for users).
"""

from pathlib import Path


def test_a_bad_value_is_said_in_japanese_and_nothing_is_created(test_inventory, throwaway_user, make_target):
    inventory = test_inventory(sdenv_webui_port="abc")

    english = make_target("provision", inventory, timeout=600, env={"LANGUAGE": "", "LANG": "C.UTF-8"})
    japanese = make_target("provision", inventory, timeout=600, env={"LANGUAGE": "ja", "LANG": "C.UTF-8"})

    assert english.returncode != 0 and japanese.returncode != 0
    # The callback's YAML output folds long lines: compare with whitespace collapsed.
    said_in_english, said_in_japanese = (" ".join(r.output.split()) for r in (english, japanese))
    assert "sets sdenv_webui_port to 'abc': expected a whole number." in said_in_english, english.output
    assert "で sdenv_webui_port が 'abc' になっています: 整数 を指定してください。" in said_in_japanese, (
        japanese.output
    )
    assert "Stopped with errors on 1 of 1 host: localhost." in english.output
    assert "1 台のうち 1 台でエラーが起きて止まりました: localhost。" in japanese.output
    assert not Path("/home", throwaway_user).exists() and not inventory.state_dir.exists()
