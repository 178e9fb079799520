"""The repository root is an Ansible collection (galaxy.yml): built, installed elsewhere, and used by a
playbook outside the repository as `sdenv.toolkit.model_file`, with none of the repository's ansible.cfg."""

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from model_fixtures import random_safetensors

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PLAYBOOK = """
- name: Use the toolkit's model_file from the installed collection
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install a model pinned by SHA256 from a bundle directory
      sdenv.toolkit.model_file:
        dest: "{{ dest }}"
        urls: ["{{ bundle }}"]
        sha256: "{{ sha256 }}"
        stat_cache: "{{ cache }}"
      register: installed
    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ installed | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def galaxy(work, *args):
    """ansible-galaxy collection ARGS in `work`; a failure shows what it printed."""
    done = subprocess.run(
        [BIN / "ansible-galaxy", "collection", *args], capture_output=True, text=True, cwd=work
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory):
    work = tmp_path_factory.mktemp("collection")
    galaxy(work, "build", "--output-path", work / "dist", ROOT)
    (tarball,) = (work / "dist").glob("sdenv-toolkit-*.tar.gz")
    galaxy(work, "install", "-p", work / "collections", tarball)
    return work


def run_elsewhere(work, variables):
    elsewhere = work / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "play.yml").write_text(PLAYBOOK)
    (elsewhere / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")} | {
        "ANSIBLE_CONFIG": str(elsewhere / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(work / "collections"),
    }
    return subprocess.run(
        [
            BIN / "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            json.dumps(variables),
            "play.yml",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )


def test_built_collection_carries_the_model_file_module_and_its_action(installed_collection):
    root = installed_collection / "collections" / "ansible_collections" / "sdenv" / "toolkit"
    for path in (
        "plugins/modules/model_file.py",
        "plugins/action/model_file.py",
        "meta/runtime.yml",
        "roles/models",
    ):
        assert (root / path).exists(), path
    assert not (root / "tests").exists() and not (root / ".venv").exists()


def test_a_playbook_elsewhere_installs_a_model_with_the_fqcn(installed_collection, tmp_path):
    data = random_safetensors(4096, seed=7)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "tiny.safetensors").write_bytes(data)
    variables = {
        "ansible_python_interpreter": sys.executable,
        "dest": str(tmp_path / "models" / "tiny.safetensors"),
        "bundle": str(bundle),
        "sha256": hashlib.sha256(data).hexdigest(),
        "cache": str(tmp_path / "stat-cache.json"),
        "out": str(tmp_path / "result.json"),
    }
    (tmp_path / "models").mkdir()
    first = run_elsewhere(installed_collection, variables)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "models" / "tiny.safetensors").read_bytes() == data
    assert json.loads((tmp_path / "result.json").read_text())["sha256"] == variables["sha256"]
    # The second run takes the collection's model_file_check fast path (the action names its sibling module).
    second = run_elsewhere(installed_collection, variables)
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads((tmp_path / "result.json").read_text())["verified_by"] == "stat-cache"


def test_the_collections_model_file_downloads_over_http(installed_collection, tmp_path):
    """The download path (sdenv_http, the pipeline, the stat cache) resolves its imports installed, too."""
    data = random_safetensors(8192, seed=8)
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny.safetensors").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "models").mkdir()
        variables = {
            "ansible_python_interpreter": sys.executable,
            "dest": str(tmp_path / "models" / "tiny.safetensors"),
            "bundle": f"http://127.0.0.1:{server.server_port}/tiny.safetensors",
            "sha256": hashlib.sha256(data).hexdigest(),
            "cache": str(tmp_path / "stat-cache.json"),
            "out": str(tmp_path / "result.json"),
        }
        result = run_elsewhere(installed_collection, variables)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "models" / "tiny.safetensors").read_bytes() == data
    assert json.loads((tmp_path / "result.json").read_text())["verified_by"] == "download"
