"""The fixture-host command the macOS workflow runs (tests/fixtures/fixture_host.py): its refusals change
nothing, and what it writes is what the workflow and the integration tests read. Its full run (build,
serve, provision against it) is tests/integration/test_verify_make.py's lifecycle test."""

import os
import shutil
import subprocess
import sys

import fixture_host
import pytest
import yaml
from fixture_host import (
    ROOT,
    FixtureHost,
    account_vars,
    free_port,
    main,
    parse_apps,
    primary_address,
    write_env_file,
    write_inventory,
)


def refusal(capsys, *argv):
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_refusals_are_one_sentence_and_make_nothing(tmp_path, capsys):
    assert "not an absolute path" in refusal(capsys, "--root", "relative/dir")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("mine")
    assert "not an empty directory" in refusal(capsys, "--root", str(busy))
    assert sorted(p.name for p in busy.iterdir()) == ["something"]
    new = tmp_path / "new"
    assert "not a plain account name" in refusal(capsys, "--root", str(new), "--user", "Bad Name")
    # An account that exists could be reset or deleted by what runs against the fixture.
    assert "exists already" in refusal(capsys, "--root", str(new), "--user", "root")
    assert "NAME=VALUE" in refusal(capsys, "--root", str(new), "--var", "no-equals-sign")
    assert "not a YAML value" in refusal(capsys, "--root", str(new), "--var", "sdenv_x=[unclosed")
    assert "--user, --root" in refusal(capsys, "--root", str(new), "--var", "sdenv_state_dir=/var/lib/sdenv")
    # The apps: only those the fixture serves (another would send the provision to the real upstream).
    assert "serves webui, comfyui only" in refusal(capsys, "--root", str(new), "--apps", "webui,diffusionbee")
    assert "expected webui in it" in refusal(capsys, "--root", str(new), "--apps", "comfyui")
    assert "each app once" in refusal(capsys, "--root", str(new), "--apps", "webui,comfyui,webui")
    assert "with --apps" in refusal(capsys, "--root", str(new), "--var", "sdenv_apps=[webui, comfyui]")
    assert not new.exists()


def test_apps_are_read_as_sdenv_apps_names_them():
    assert parse_apps("webui") == ["webui"]
    assert parse_apps("webui, comfyui") == ["webui", "comfyui"]


def test_free_port_skips_the_ports_other_apps_took(monkeypatch):
    ports = iter([8188, 8188, 8190])

    class Socket:
        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def bind(self, _):
            self.port = next(ports)

        def getsockname(self):
            return "127.0.0.1", self.port

    monkeypatch.setattr(fixture_host.socket, "socket", Socket)
    assert free_port(taken={8188}) == 8190


def test_comfyui_is_served_and_chosen_only_when_asked(tmp_path, monkeypatch):
    """The build and the inventory's app choice; the real venv locks (uv against the served index) and a
    provision from them are test_verify_make.py's lifecycle test, which runs the command with --apps."""
    monkeypatch.setattr(fixture_host, "venv_lock_vars", lambda *_: {"sdenv_lock": {}})
    alone = FixtureHost(tmp_path / "alone")
    assert alone.comfyui is None and not (alone.served / "git" / "ComfyUI.git").exists()
    assert "sdenv_apps" not in alone.host_vars("http://127.0.0.1:1")
    both = FixtureHost(tmp_path / "both", ["webui", "comfyui"])
    assert (both.served / "git" / "ComfyUI.git" / "HEAD").is_file()
    assert both.upstream.comfyui is both.comfyui  # the fixture lock pins it (FixtureUpstream.lock)
    variables = both.host_vars("http://127.0.0.1:1")
    assert variables["sdenv_apps"] == ["webui", "comfyui"]
    assert variables["sdenv_comfyui_port"] != variables["sdenv_webui_port"]


def test_inventory_keeps_the_repositorys_settings_with_the_throwaway_ones_on_top(tmp_path):
    variables = {**account_vars("sdt0123abcd", tmp_path), "sdenv_snapshot_tmutil": True}
    path = write_inventory(tmp_path / "inventory", variables)
    assert (tmp_path / "inventory" / "group_vars").resolve() == ROOT / "inventory" / "group_vars"
    host = yaml.safe_load(path.read_text())["all"]["hosts"]["localhost"]
    assert host["sdenv_user_name"] == "sdt0123abcd"
    assert host["sdenv_state_dir"] == str(tmp_path / "state")
    assert host["sdenv_snapshot_store"] == str(tmp_path / "snapshots")
    assert host["ansible_connection"] == "local" and host["sdenv_snapshot_tmutil"] is True
    # Written again (the integration tests rewrite it per step): replaced whole, the link kept.
    write_inventory(tmp_path / "inventory", {**variables, "sdenv_snapshot_tmutil": False})
    assert yaml.safe_load(path.read_text())["all"]["hosts"]["localhost"]["sdenv_snapshot_tmutil"] is False
    assert sorted(p.name for p in path.parent.iterdir()) == ["group_vars", "hosts.yml"]


def test_env_file_is_what_bash_and_github_env_read(tmp_path):
    path = tmp_path / "fixture.env"
    write_env_file(path, {"SDENV_FIXTURE_USER": "sdt0123abcd", "SDENV_FIXTURE_INVENTORY": tmp_path / "i.yml"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixture.env"]
    script = f"set -a; . {path}; echo $SDENV_FIXTURE_USER $SDENV_FIXTURE_INVENTORY"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["sdt0123abcd", str(tmp_path / "i.yml")]


def test_primary_address_is_never_loopback():
    address = primary_address()
    assert address is None or not address.startswith("127.")


@pytest.mark.skipif(shutil.which("ip") is None, reason="lists this machine's addresses with ip(8) (iproute2)")
def test_primary_address_is_one_of_this_machines_own():
    address = primary_address()
    if address is None:
        pytest.skip("no route leaves this machine")
    own = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    assert f" {address}/" in own, (address, own)


def test_help_runs_as_a_module_from_the_checkout():
    out = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.fixture_host", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert "sudo make provision INVENTORY=" in out.stdout
