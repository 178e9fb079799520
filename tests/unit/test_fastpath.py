"""make provision's fast path (plugins/module_utils/sdenv_fastpath.py): what is planned, what is compared,
and that every kind of drift makes a role run in full."""

import os
import pwd

import pytest
import sdenv_fastpath as fastpath

VALUES = {
    "sdenv_user_name": "root",
    "sdenv_user_home": "/home/sdtx",
    "sdenv_user_password_file": "/var/lib/sdenv/sdtx.password",
    "sdenv_login_profile": "/home/sdtx/.profile",
    "sdenv_webui_dir": "/home/sdtx/stable-diffusion-webui",
    "sdenv_models_kind_dirs": {
        "checkpoint": "/home/sdtx/stable-diffusion-webui/models/Stable-diffusion",
        "lora": "/home/sdtx/stable-diffusion-webui/models/Lora",
    },
    "sdenv_webui_hf_home": "/home/sdtx/.cache/huggingface",
    "sdenv_webui_venv_dir": "/home/sdtx/stable-diffusion-webui/venv",
}


def planned(tmp_path, role_values=None, lock=None):
    webui = tmp_path / "webui"
    (webui / "models" / "Lora").mkdir(parents=True)
    (webui / "outputs").mkdir()
    (webui / "webui.py").write_text("print('hi')\n")
    values = {
        **VALUES,
        "sdenv_user_name": pwd.getpwuid(os.geteuid()).pw_name,
        "sdenv_user_home": str(tmp_path),
        "sdenv_webui_dir": str(webui),
        "sdenv_models_kind_dirs": {"lora": str(webui / "models" / "Lora")},
        "sdenv_webui_hf_home": str(tmp_path / "hf"),
        "sdenv_webui_venv_dir": str(webui / "venv"),
        "sdenv_login_profile": str(tmp_path / ".profile"),
        "sdenv_user_password_file": str(tmp_path / "none.password"),
    }
    per_role = role_values or {
        r: {"sdenv_x": 1, **values} for r in ("dummy_user", "webui", "models", "python")
    }
    return fastpath.plan(
        per_role, lock or {"webui": {"commit": "a" * 40}}, "Linux", {"webui": "code1"}
    ), webui


def stamped(plan):
    return {role: fastpath.stamp(p) for role, p in plan.items()}


def test_nothing_changed_every_role_may_skip(tmp_path):
    plan, _ = planned(tmp_path)
    fast, reasons = fastpath.fast_roles(plan, stamped(plan))
    assert fast == ["dummy_user", "models", "python", "webui"] and reasons == {}


def test_no_stamp_yet_runs_in_full(tmp_path):
    plan, _ = planned(tmp_path)
    fast, reasons = fastpath.fast_roles(plan, {})
    assert fast == [] and reasons["webui"] == "no record of an earlier full run"


def test_deep_runs_every_role(tmp_path):
    plan, _ = planned(tmp_path)
    fast, reasons = fastpath.fast_roles(plan, stamped(plan), deep=True)
    assert fast == [] and set(reasons) == set(plan)


def test_a_file_changed_in_the_webui_tree_runs_webui(tmp_path):
    plan, webui = planned(tmp_path)
    stamps = stamped(plan)
    (webui / "webui.py").write_text("print('changed')\n")
    fast, reasons = fastpath.fast_roles(plan, stamps)
    assert "webui" not in fast and reasons["webui"] == f"{webui} changed"
    # python feeds webui (sdenv_python), so it runs too; the models do not
    assert "python" in reasons and "models" in fast


def test_same_size_and_restored_mtime_is_still_seen(tmp_path):
    plan, webui = planned(tmp_path)
    stamps = stamped(plan)
    target = webui / "webui.py"
    st = target.stat()
    target.write_text("print('HI')\n")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: the ctime still moves
    assert "webui" in fastpath.fast_roles(plan, stamps)[1]


def test_outputs_and_logs_are_the_users_and_model_folders_the_models_role(tmp_path):
    plan, webui = planned(tmp_path)
    stamps = stamped(plan)
    (webui / "outputs" / "image.png").write_bytes(b"png")
    assert "webui" in fastpath.fast_roles(plan, stamps)[0]
    (webui / "models" / "Lora" / "x.safetensors").write_bytes(b"model")
    fast, reasons = fastpath.fast_roles(plan, stamps)
    assert "webui" in fast and "models" in reasons


def test_a_model_touched_runs_models(tmp_path):
    plan, webui = planned(tmp_path)
    model = webui / "models" / "Lora" / "x.safetensors"
    model.write_bytes(b"model")
    stamps = stamped(plan)
    os.utime(model, (1, 1))
    fast, reasons = fastpath.fast_roles(plan, stamps)
    assert "models" in reasons and "webui" in fast


def test_a_setting_edited_runs_the_roles_that_use_it(tmp_path):
    plan, webui = planned(tmp_path)
    stamps = stamped(plan)
    role_values = {r: {"sdenv_x": 1, "sdenv_webui_dir": str(webui)} for r in ("webui", "models")}
    before = fastpath.plan(role_values, {}, "Linux", {})
    role_values["webui"]["sdenv_x"] = 2  # a setting only the webui role's spec names
    after = fastpath.plan(role_values, {}, "Linux", {})
    assert before["webui"]["inputs"]["settings"] != after["webui"]["inputs"]["settings"]
    assert before["models"]["inputs"] == after["models"]["inputs"]
    edited = {
        **plan,
        "webui": {**plan["webui"], "inputs": {**plan["webui"]["inputs"], **after["webui"]["inputs"]}},
    }
    edited["webui"]["inputs"]["lock"] = plan["webui"]["inputs"]["lock"]
    edited["webui"]["inputs"]["code"] = plan["webui"]["inputs"]["code"]
    reasons = fastpath.fast_roles(edited, stamps)[1]
    assert reasons["webui"] == "its inputs changed: settings" and "models" not in reasons


def test_deep_is_a_run_mode_not_a_setting(tmp_path):
    # make provision DEEP=1 sets sdenv_models_deep for its run: the plain run after it must not count that as
    # an edited setting (it would run the models role in full once more for nothing).
    webui = str(tmp_path / "webui")
    plain = fastpath.plan({"models": {"sdenv_models_deep": False, "sdenv_webui_dir": webui}}, {}, "Linux", {})
    deep = fastpath.plan({"models": {"sdenv_models_deep": True, "sdenv_webui_dir": webui}}, {}, "Linux", {})
    assert plain["models"]["inputs"] == deep["models"]["inputs"]


def test_the_lock_and_the_code_are_inputs(tmp_path):
    plan, _ = planned(tmp_path)
    stamps = stamped(plan)
    plan["webui"]["inputs"]["code"] = "code2"
    plan["models"]["inputs"]["lock"] = fastpath.digest({"other": 1})
    reasons = fastpath.fast_roles(plan, stamps)[1]
    assert reasons["webui"] == "its inputs changed: code" and reasons["models"] == "its inputs changed: lock"


def test_secrets_are_not_in_the_settings_digest():
    with_password = fastpath.settings_digest({"sdenv_user_password": "a", "sdenv_user_password_env": "X"})
    other_password = fastpath.settings_digest({"sdenv_user_password": "b", "sdenv_user_password_env": "X"})
    other_env = fastpath.settings_digest({"sdenv_user_password": "a", "sdenv_user_password_env": "Y"})
    assert with_password == other_password != other_env


def test_an_output_that_is_not_an_absolute_path_gets_no_plan():
    role_values = {"webui": {**VALUES, "sdenv_webui_dir": None}}
    bad = fastpath.plan(role_values, {}, "Linux", {})
    assert bad == {"webui": None}
    assert fastpath.fast_roles(bad, {"webui": {"inputs": {}}})[1] == {"webui": "no usable plan"}


def test_the_known_good_snapshot_is_taken_again_when_a_role_ran(tmp_path):
    plan, webui = planned(tmp_path)
    plan["known_good"] = fastpath.plan({"known_good": {"sdenv_snapshot_known_good": True}}, {}, "Linux", {})[
        "known_good"
    ]
    stamps = stamped(plan)
    assert "known_good" in fastpath.fast_roles(plan, stamps)[0]
    (webui / "webui.py").write_text("changed\n")
    assert fastpath.fast_roles(plan, stamps)[1]["known_good"].startswith("roles ran: ")


def test_an_account_change_runs_dummy_user(tmp_path, monkeypatch):
    plan, _ = planned(tmp_path)
    stamps = stamped(plan)
    real = pwd.getpwnam

    def other_shell(name):
        entry = list(real(name))
        entry[6] = "/bin/other"
        return pwd.struct_passwd(entry)

    monkeypatch.setattr(fastpath.pwd, "getpwnam", other_shell)
    assert "dummy_user" in fastpath.fast_roles(plan, stamps)[1]


def test_code_digest_follows_the_files(tmp_path):
    (tmp_path / "role" / "tasks").mkdir(parents=True)
    main = tmp_path / "role" / "tasks" / "main.yml"
    main.write_text("a\n")
    before = fastpath.code_digest([str(tmp_path / "role")])
    (tmp_path / "role" / "README.md").write_text("docs do not run\n")
    assert fastpath.code_digest([str(tmp_path / "role")]) == before
    main.write_text("b\n")
    assert fastpath.code_digest([str(tmp_path / "role")]) != before


DPKG_STATUS = """Package: bc
Status: install ok installed
Architecture: amd64
Version: 1.07.1-3+b1
Description: GNU bc arbitrary precision calculator language
 GNU bc is an interactive algebraic language with arbitrary precision which

Package: sudo
Status: deinstall ok config-files
Architecture: amd64
Version: 1.9.13p3-1+deb12u4

Package: unrelated
Status: install ok installed
Version: 1
"""


def test_packages_are_read_from_dpkgs_status_by_name():
    found = fastpath.dpkg_packages(DPKG_STATUS, ["bc", "sudo", "git"])
    assert found == {
        "bc:amd64": "install ok installed 1.07.1-3+b1",
        "sudo:amd64": "deinstall ok config-files 1.9.13p3-1+deb12u4",
    }


def test_a_package_removed_runs_its_role_and_an_unrelated_one_does_not(tmp_path):
    status = tmp_path / "status"
    status.write_text(DPKG_STATUS)
    spec = ["packages", str(status), ["bc"]]
    before = fastpath.fingerprint(spec)
    status.write_text(DPKG_STATUS.replace("Version: 1\n", "Version: 2\n"))
    assert fastpath.fingerprint(spec) == before
    status.write_text(
        DPKG_STATUS.replace(
            "Package: bc\nStatus: install ok installed", "Package: bc\nStatus: deinstall ok config-files"
        )
    )
    assert fastpath.fingerprint(spec) != before


def test_linux_roles_fingerprint_their_own_packages():
    values = {**VALUES, "sdenv_user_shell": "/bin/zsh", "sdenv_linux_packages": ["git", "wget"]}
    assert ["packages", fastpath.DPKG_STATUS, ["sudo", "zsh"]] in fastpath.outputs(
        "dummy_user", values, "Linux"
    )
    assert ["packages", fastpath.DPKG_STATUS, ["git", "wget"]] in fastpath.outputs(
        "homebrew", values, "Linux"
    )
    # macOS (documented behaviour, not run here): Homebrew's Cellar and bin stand for the formulae
    darwin = fastpath.outputs("homebrew", {**values, "sdenv_homebrew_prefix": "/opt/homebrew"}, "Darwin")
    assert ["path", "/opt/homebrew/Cellar", []] in darwin and all(s[0] != "packages" for s in darwin)


def comfyui_planned(tmp_path, apps):
    plan, webui = planned(tmp_path)
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "output").mkdir(parents=True)
    (comfyui / "main.py").write_text("print('comfy')\n")
    values = {**VALUES, "sdenv_webui_dir": str(webui), "sdenv_apps": apps, "sdenv_comfyui_dir": str(comfyui)}
    more = fastpath.plan({"comfyui": values, "python": values, "webui": values}, {}, "Linux", {})
    return {**plan, **more}, comfyui


def test_comfyui_not_chosen_is_not_planned(tmp_path):
    plan, _ = comfyui_planned(tmp_path, ["webui"])
    assert "comfyui" not in plan


def test_a_file_changed_in_comfyui_runs_it_and_what_feeds_it(tmp_path):
    plan, comfyui = comfyui_planned(tmp_path, ["webui", "comfyui"])
    stamps = stamped(plan)
    (comfyui / "output" / "ComfyUI_00001_.png").write_bytes(b"png")  # the user's: no drift
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    (comfyui / "main.py").write_text("print('edited')\n")
    fast, reasons = fastpath.fast_roles(plan, stamps)
    # comfyui uses webui's defaults and python's interpreter: both run with it (a chain, fed to a fixpoint)
    assert reasons["comfyui"] == f"{comfyui} changed"
    assert reasons["webui"] == "it feeds comfyui" and reasons["python"].startswith("it feeds")
    assert "models" in fast


def test_comfyuis_user_folders_are_the_snapshots_setting_and_its_scratch_is_no_drift(tmp_path):
    plan, comfyui = comfyui_planned(tmp_path, ["webui", "comfyui"])
    (comfyui / "workflows").mkdir()
    values = {**VALUES, "sdenv_apps": ["webui", "comfyui"], "sdenv_comfyui_dir": str(comfyui),
              "sdenv_snapshot_comfyui_user_data": ["output", "workflows"]}  # fmt: skip
    plan = {**plan, **fastpath.plan({"comfyui": values, "python": values, "webui": values}, {}, "Linux", {})}
    stamps = stamped(plan)
    (comfyui / "workflows" / "mine.json").write_text("{}")  # the user's, as settings.yml names it
    (comfyui / "temp").mkdir()
    (comfyui / "temp" / "preview.png").write_bytes(b"png")  # left by a killed run
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    (comfyui / "input").mkdir()
    (comfyui / "input" / "x.png").write_bytes(b"png")  # not the user's folder in these settings
    assert fastpath.fast_roles(plan, stamps)[1]["comfyui"] == f"{comfyui} changed"


def test_the_walk_never_enters_a_link_even_one_swapped_in_after_its_stat(tmp_path):
    """Root fingerprints the dummy's trees: each directory is opened below its parent with O_NOFOLLOW."""
    (tmp_path / "tree" / "real").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "tree" / "swapped").symlink_to(outside, target_is_directory=True)
    top_fd = os.open(tmp_path / "tree", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(os.open("real", fastpath._DIR_FLAGS, dir_fd=top_fd))
        with pytest.raises(OSError):  # what a directory replaced by a link between stat and open meets
            os.open("swapped", fastpath._DIR_FLAGS, dir_fd=top_fd)
    finally:
        os.close(top_fd)
    spec = ["tree", str(tmp_path / "tree"), []]
    before = fastpath.fingerprint(spec)
    (outside / "file").write_text("the link's target changed")
    assert fastpath.fingerprint(spec) == before


def test_what_the_webui_writes_as_it_runs_is_no_drift_and_its_code_still_is(tmp_path):
    """make run / make verify start the WebUI: bytecode, params.txt, cache/, a git index git status rewrote
    with the same bytes (and the directories' times those move) leave the next provision on the fast path."""
    plan, webui = planned(tmp_path)
    git = webui / ".git"
    git.mkdir()
    (git / "index").write_bytes(b"DIRC index bytes")
    (webui / "modules").mkdir()
    (webui / "modules" / "shared.py").write_text("opts = {}\n")
    stamps = stamped(plan)
    (webui / "__pycache__").mkdir()
    (webui / "__pycache__" / "webui.cpython-310.pyc").write_bytes(b"pyc")
    (webui / "modules" / "__pycache__").mkdir()
    (webui / "modules" / "__pycache__" / "shared.cpython-310.pyc").write_bytes(b"pyc")
    (webui / "params.txt").write_text("a cat\nSteps: 20")
    (webui / "cache").mkdir()
    (webui / "cache" / "hashes").write_bytes(b"db")
    (webui / "extensions").mkdir()  # the folders it makes at its first start, empty
    (webui / "models" / "hypernetworks").mkdir()
    (webui / "models" / "VAE-approx").mkdir()
    index = git / "index"
    index.write_bytes(index.read_bytes())  # same bytes, new mtime and ctime
    os.utime(index, ns=(1, 1))
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    (git / "index").write_bytes(b"DIRC index staged")  # the index's bytes are the repository's state
    assert fastpath.fast_roles(plan, stamps)[1]["webui"] == f"{webui} changed"
    (git / "index").write_bytes(b"DIRC index bytes")
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    (webui / "modules" / "extra.py").write_text("x = 1\n")  # a new file in the code: the role runs
    assert fastpath.fast_roles(plan, stamps)[1]["webui"] == f"{webui} changed"
    (webui / "modules" / "extra.py").unlink()
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    (webui / "extensions" / "an-extension").mkdir()
    (webui / "extensions" / "an-extension" / "install.py").write_text("")  # an extension installed: it runs
    assert fastpath.fast_roles(plan, stamps)[1]["webui"] == f"{webui} changed"


def test_a_directory_replaced_or_its_mode_changed_in_a_tree_is_still_seen(tmp_path):
    plan, webui = planned(tmp_path)
    lora = webui / "extensions-builtin" / "Lora"
    lora.mkdir(parents=True)
    (lora / "lora.py").write_text("x = 1\n")
    os.chmod(lora, 0o700)
    stamps = stamped(plan)
    os.chmod(lora, 0o500)
    assert fastpath.fast_roles(plan, stamps)[1]["webui"] == f"{webui} changed"
    os.chmod(lora, 0o700)  # its times moved, its entries did not
    assert fastpath.fast_roles(plan, stamps)[1] == {}
    os.rename(lora, tmp_path / "moved")
    lora.mkdir()
    os.chmod(lora, 0o700)
    os.link(tmp_path / "moved" / "lora.py", lora / "lora.py")  # the same file in another directory
    assert fastpath.fast_roles(plan, stamps)[1]["webui"] == f"{webui} changed"


def test_an_index_swapped_for_a_fifo_after_its_stat_neither_blocks_nor_is_read(tmp_path):
    git = tmp_path / ".git"
    git.mkdir()
    (git / "index").write_bytes(b"DIRC")
    st = os.stat(git / "index")
    (git / "index").unlink()
    os.mkfifo(git / "index")  # what the walk meets if the dummy swaps it between the stat and the open
    fd = os.open(git, os.O_RDONLY | os.O_DIRECTORY)
    try:
        line = fastpath._git_index_line(str(git / "index"), fd, "index", st)
    finally:
        os.close(fd)
    assert line == f"{git / 'index'}\0not a regular file\n".encode()
