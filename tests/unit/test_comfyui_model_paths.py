"""ComfyUI's extra_model_paths.yaml: the toolkit's `sdenv:` section, the user's bytes kept (roles/comfyui)."""

import comfyui_model_paths as mp
import pytest
import yaml

FOLDERS = {"checkpoints": "checkpoints", "loras": "loras"}
STORE = "/home/dummy/sd-models"

# A user's file as ComfyUI's own example shapes it (the a111 section), with comments, odd spacing, a | block.
USERS = """#Rename this to extra_model_paths.yaml and ComfyUI will load it
a111:
    base_path: /home/me/stable-diffusion-webui/

    checkpoints: models/Stable-diffusion
    loras: |
         models/Lora
         models/LyCORIS
#other_ui:
#    base_path: path/to/ui
mine:   # my own notes
  base_path: '~/more models'
  vae: vae
"""


def test_a_missing_file_gets_the_section_comfyui_reads_as_the_store():
    text = mp.merged_text(None, STORE, FOLDERS)
    assert yaml.safe_load(text) == {
        "sdenv": {"base_path": STORE, "checkpoints": "checkpoints", "loras": "loras"}
    }
    assert mp.read_section(text) == {"base_path": STORE, "checkpoints": "checkpoints", "loras": "loras"}


def test_a_users_sections_comments_and_layout_are_kept_byte_for_byte():
    text = mp.merged_text(USERS, STORE, FOLDERS)
    assert text.startswith(USERS)
    again = mp.merged_text(text, STORE, FOLDERS)
    assert again == text  # idempotent: nothing to write the second time
    moved = mp.merged_text(text, "/srv/models", FOLDERS)
    assert moved.startswith(USERS) and mp.read_section(moved)["base_path"] == "/srv/models"


def test_only_the_marked_block_changes_where_it_sits():
    head, tail = "first:\n  checkpoints: a\n", "# trailing comment\nlast:\n  loras: b\n"
    text = head + mp.section_text("/old", FOLDERS) + tail
    new = mp.merged_text(text, STORE, FOLDERS)
    assert new == head + mp.section_text(STORE, FOLDERS) + tail


def test_a_file_without_a_final_newline_keeps_its_last_line_whole():
    new = mp.merged_text("mine:\n  vae: v", STORE, FOLDERS)
    assert new.startswith("mine:\n  vae: v\n") and yaml.safe_load(new)["mine"] == {"vae": "v"}


@pytest.mark.parametrize(
    "text, words",
    [
        ("a111:\n  checkpoints: [unclosed\n", "is not valid YAML (line"),
        ("- a\n- b\n", "holds a list, not a mapping"),
        ("sdenv:\n  base_path: /mine\n", "a section named `sdenv` the toolkit did not write"),
        (mp.BEGIN + "\nsdenv:\n  base_path: /x\n", "marker lines broken or repeated"),
    ],
)
def test_a_file_the_toolkit_will_not_edit_is_refused_in_one_sentence(text, words):
    with pytest.raises(mp.ModelPathsError) as caught:
        mp.merged_text(text, STORE, FOLDERS, "/home/dummy/ComfyUI/extra_model_paths.yaml")
    message = str(caught.value)
    assert words in message and "nothing was changed" in message and message.count(". ") == 0


@pytest.mark.parametrize("path", ["/home/dummy/sd models", "/srv/models: old", "~", "/x/#y", "/n/yes"])
def test_odd_store_paths_read_back_exactly(path):
    assert mp.read_section(mp.merged_text(None, path, FOLDERS))["base_path"] == path
