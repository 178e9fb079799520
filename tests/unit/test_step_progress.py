"""Progress of long steps: the shared line and watch (plugins/module_utils/sdenv_progress.py) and the WebUI's
git and uv progress (plugins/module_utils/step_progress.py)."""

import importlib.util
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import sdenv_progress as sp
import step_progress as stp
import webui_git_tree as gt

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000

# Recorded from `LC_ALL=C git clone --progress --no-checkout file://<repo>` (git 2.39.5): one chunk of stderr,
# each update ending in \r, each phase in \n.
RECORDED_CLONE = (
    "Cloning into '/tmp/x'...\n"
    "remote: Enumerating objects: 2515, done.        \n"
    "remote: Counting objects:   0% (1/2515)        \rremote: Counting objects:   1% (26/2515)        \r"
    "remote: Counting objects: 100% (2515/2515), done.        \n"
    "remote: Compressing objects:  96% (1337/1392)        \rremote: Compressing objects: 100% (1392/1392), done."
    "        \n"
    "Receiving objects:   2% (51/2515)\rReceiving objects:  10% (252/2515)\r"
    "Receiving objects: 100% (2515/2515), 1.06 MiB | 4.21 MiB/s, done.\n"
    "Resolving deltas:  99% (1624/1640)\rResolving deltas: 100% (1640/1640)\rResolving deltas: 100% (1640/1640), "
    "done.\n"
)
# git's documented format of a clone over the network, as GitHub's clones of the WebUI print it.
NETWORK_LINE = "Receiving objects:  45% (1234/2742), 12.34 MiB | 5.67 MiB/s"


def test_the_model_download_line_is_unchanged():
    doc = {"name": "sd15", "phase": "downloading", "received": 967 * MB, "total": 2132 * MB,
           "rate": 38.2 * MB, "eta": 30.0}  # fmt: skip
    assert sp.format_progress(doc) == "sd15  downloading   45.4% 967/2132 MB  38.2 MB/s  ETA 0:30"
    assert sp.format_progress({"name": "x", "received": 3 * MB}) == "x  3 MB  0.0 MB/s"


def test_a_counted_line_shows_items_mb_rate_elapsed_and_eta():
    doc = {"name": "WebUI tree", "phase": "clone Receiving objects", "count": 1234, "count_total": 2742,
           "count_unit": "objects", "received": 12_940_000, "rate": 5_945_000.0, "elapsed": 75, "eta": 91.5}  # fmt: skip
    assert sp.format_progress(doc) == (
        "WebUI tree  clone Receiving objects   45.0% 1234/2742 objects  12.9 MB  5.9 MB/s  elapsed 1:15  ETA 1:31"
    )


def test_an_uncounted_line_and_an_idle_line():
    venv = stp.venv_doc("WebUI venv", "install the locked packages", 96, 512 * MB, 20 * MB)
    assert sp.format_progress({**venv, "elapsed": 3725}) == (
        "WebUI venv  install the locked packages  96 packages in the lock  512.0 MB  20.0 MB/s  elapsed 1:02:05"
        "  (uv cache growth; no ETA: the lock has no sizes)"
    )
    assert sp.format_progress({"name": "WebUI tree", "phase": "git", "idle": True, "elapsed": 10}) == (
        "WebUI tree  git  elapsed 0:10"
    )


def test_git_progress_lines_parse_with_and_without_sizes():
    assert stp.parse_git_progress(NETWORK_LINE) == {
        "phase": "Receiving objects", "done": 1234, "total": 2742,
        "bytes": int(12.34 * 1024**2), "rate": 5.67 * 1024**2,
    }  # fmt: skip
    assert stp.parse_git_progress("remote: Counting objects:   1% (26/2515)        ") == {
        "phase": "Counting objects", "done": 26, "total": 2515,
    }  # fmt: skip
    assert stp.parse_git_progress("Resolving deltas: 100% (1640/1640), done.")["phase"] == "Resolving deltas"
    for other in (
        "Cloning into '/tmp/x'...",
        "remote: Enumerating objects: 2515, done.",
        "fatal: no such repo",
    ):
        assert stp.parse_git_progress(other) is None


def test_git_stderr_in_pieces_gives_the_latest_counters_and_keeps_the_other_lines(tmp_path):
    progress_file = tmp_path / "p.json"
    ticks = iter(range(0, 1000, 2))  # each counter line is 2 s after the last: every one is written
    reader = stp.GitProgress("WebUI tree", "clone", str(progress_file), now=lambda: next(ticks))
    written = []
    cut = RECORDED_CLONE.index("Receiving objects:  10%") + 5  # a chunk that ends inside an update
    for piece in (RECORDED_CLONE[:cut], RECORDED_CLONE[cut:]):
        reader.feed(piece)
        if progress_file.exists():
            written.append(json.loads(progress_file.read_text()))
    reader.feed("fatal: the end")
    reader.close()
    receiving = [d for d in written if d["phase"] == "clone Receiving objects"]
    assert receiving and receiving[0]["count"] == 51 and receiving[0]["count_unit"] == "objects"
    assert written[-1] == {"name": "WebUI tree", "phase": "clone Resolving deltas", "count": 1640,
                           "count_total": 1640, "count_unit": "objects"}  # fmt: skip
    assert reader.stderr().splitlines() == [
        "Cloning into '/tmp/x'...", "remote: Enumerating objects: 2515, done.", "fatal: the end",
    ]  # fmt: skip


def test_receiving_objects_carries_mb_rate_and_an_eta_by_the_share_of_objects():
    ticks = iter([100.0, 110.0])
    reader = stp.GitProgress("WebUI tree", "fetch", "", now=lambda: next(ticks))
    reader.feed("Receiving objects:  10% (100/1000), 1.00 MiB | 1.00 MiB/s\r")
    reader.feed("Receiving objects:  20% (200/1000), 2.00 MiB | 1.00 MiB/s\r")
    assert reader.doc["received"] == 2 * 1024**2 and reader.doc["rate"] == 1024**2
    assert reader.doc["eta"] == pytest.approx(10 * 800 / 200)


def one_commit_repo(tmp_path):
    """A repository with one commit: (path, sha)."""
    work = tmp_path / "origin"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "f.txt").write_text("one\n")
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "one"], cwd=work, check=True, env=env)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, env=env, capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    return work, sha


def test_a_clone_from_a_source_writes_progress_and_leaves_no_progress_file(tmp_path, monkeypatch):
    work, sha = one_commit_repo(tmp_path)
    written = []
    real_write = stp.write_progress
    monkeypatch.setattr(stp, "write_progress", lambda path, doc: (written.append(doc), real_write(path, doc)))
    dest = tmp_path / "home" / "tree"
    progress_file = tmp_path / "home" / ".tree.progress.json"
    result = gt.ensure_tree(str(dest), "https://example.invalid/r.git", sha, label="WebUI tree", source=str(work),
                            progress_file=str(progress_file))  # fmt: skip
    assert result["action"] == "clone" and gt.head(str(dest)) == sha
    assert any(d["phase"].startswith("clone ") and d["count_unit"] == "objects" for d in written)
    assert not progress_file.exists()


def test_a_failed_clone_still_names_gits_own_error(tmp_path):
    with pytest.raises(gt.GitTreeError, match=r"does not exist|not appear to be a git repository"):
        gt.ensure_tree(str(tmp_path / "tree"), "https://example.invalid/r.git", "0" * 40,
                       source=str(tmp_path / "missing"), progress_file=str(tmp_path / "p.json"))  # fmt: skip


def test_the_lock_package_count_and_the_cache_growth(tmp_path):
    lock = "# header\nnumpy==1.26.2 \\\n    --hash=sha256:ab\ntorch[cuda]==2.1.2 \\\n    --hash=sha256:cd\n"
    assert stp.lock_packages(lock) == 2
    cache = tmp_path / "cache"
    (cache / "a").mkdir(parents=True)
    (cache / "a" / "w.whl").write_bytes(b"x" * 3000)
    (cache / "b.txt").write_bytes(b"y" * 500)
    assert stp.tree_size(str(cache)) == 3500


def test_the_cache_watch_writes_the_growth_then_removes_its_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    progress_file = tmp_path / "p.json"
    docs = []
    grown = threading.Event()

    def record(path, doc):
        docs.append(doc)
        if doc["received"] == 4096:
            grown.set()

    monkeypatch.setattr(stp, "write_progress", record)
    watch = stp.CacheWatch(str(progress_file), str(cache), "WebUI venv", "install", 7, every=0.05)
    watch.start()
    while not docs:  # the first document, before anything grew: the growth counts from the watch's start
        watch.done.wait(0.01)
    (cache / "wheel").write_bytes(b"z" * 4096)
    assert grown.wait(30)
    progress_file.write_text("{}")
    watch.stop()
    assert docs[0] == stp.venv_doc("WebUI venv", "install", 7, 0, 0.0)
    assert not progress_file.exists()


class FakeConnection:
    become = None


class FakeAction:
    """What ProgressWatch uses of an action: a connection to copy and one command runner."""

    def __init__(self, outputs):
        self._connection = FakeConnection()
        self.outputs = outputs
        self.commands = []

    def _low_level_execute_command(self, command, sudoable=True):
        self.commands.append(command)
        return {"stdout": self.outputs.pop(0) if self.outputs else ""}


def watch_lines(monkeypatch, outputs, count, **kw):
    monkeypatch.setattr(sp, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(sp, "PRINT_SECONDS", 0.0)
    monkeypatch.setattr(sp, "PARENT_SECONDS", 0.01)
    lines, enough = [], threading.Event()

    def show(line):
        lines.append(line)
        if len(lines) >= count:
            enough.set()

    action = FakeAction(outputs)
    watch = sp.ProgressWatch(action, "/tmp/a b.json", "host1", show, **kw)
    watch.start()
    assert enough.wait(30)
    watch.stop()
    watch.join(30)
    return action, lines


def test_the_watch_cats_the_progress_file_and_prints_host_lines(monkeypatch):
    doc = {"name": "WebUI tree", "phase": "clone Receiving objects", "count": 5, "count_total": 10,
           "count_unit": "objects"}  # fmt: skip
    action, lines = watch_lines(monkeypatch, [json.dumps(doc)], 1)
    assert action.commands[0] == "cat '/tmp/a b.json' 2>/dev/null"
    assert lines[0] == "[host1] WebUI tree  clone Receiving objects   50.0% 5/10 objects"


def test_the_watch_shows_an_idle_step_with_its_elapsed_time(monkeypatch):
    _, lines = watch_lines(monkeypatch, ["", "not json"], 2, idle={"name": "WebUI venv", "phase": "checking",
                                                                         "idle": True}, elapsed=True)  # fmt: skip
    assert all(line.startswith("[host1] WebUI venv  checking  elapsed 0:") for line in lines)


def test_a_progress_file_beside_a_path_is_a_hidden_sibling():
    path = sp.progress_file_beside("/home/dummy/stable-diffusion-webui/", "progress")
    assert os.path.dirname(path) == "/home/dummy"
    assert os.path.basename(path).startswith(".stable-diffusion-webui.") and path.endswith(".progress.json")


@pytest.mark.parametrize(
    "name, where",
    # webui_git_tree is shared with role comfyui, so it sits in the collection's plugins/action.
    [("webui_git_tree", "plugins/action"), ("webui_venv", "roles/webui/action_plugins")],
)
def test_the_webui_action_plugins_load_the_shared_watch(name, where):
    spec = importlib.util.spec_from_file_location(f"webui_action_{name}", ROOT / where / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from ansible.plugins.action import ActionBase

    assert issubclass(module.ActionModule, ActionBase) and module.sdenv_progress is sp


PLAYBOOK = """
- name: The WebUI role's git tree and venv modules through their progress actions
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Clone from a local source with progress
      webui_git_tree:
        dest: "{{ dest }}"
        repo: https://example.invalid/r.git
        source: "{{ source }}"
        commit: "{{ commit }}"
        label: WebUI tree
      register: tree
    - name: The venv module refuses a tree without requirements (its imports resolve on the host)
      webui_venv:
        webui_dir: "{{ dest }}"
        venv_dir: "{{ work }}/venv"
        python: python3
        lock_path: "{{ work }}/locks"
        platform: linux-x86_64
        uv: /bin/false
        uv_cache_dir: "{{ work }}/uv-cache"
        clip: {}
        cache_dir: "{{ work }}/cache"
        log_path: "{{ work }}/log/bootstrap.log"
      register: venv
      ignore_errors: true
    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ {'tree': tree, 'venv': venv} | to_json }}"
        dest: "{{ work }}/out.json"
        mode: "0600"
"""


def test_the_actions_run_the_modules_through_ansible(tmp_path):
    """AnsiballZ carries step_progress to the host, the role's actions load the shared watch, the clone works,
    and no progress file is left next to the tree."""
    import sys

    work, sha = one_commit_repo(tmp_path)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    home = tmp_path / "home"
    home.mkdir()
    variables = {"dest": str(home / "tree"), "source": str(work), "commit": sha, "work": str(tmp_path),
                 "ansible_python_interpreter": sys.executable}  # fmt: skip
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")} | {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LIBRARY": f"{ROOT / 'roles/webui/library'}:{ROOT / 'plugins/modules'}",
        "ANSIBLE_MODULE_UTILS": f"{ROOT / 'roles/webui/module_utils'}:{ROOT / 'plugins/module_utils'}",
        "ANSIBLE_ACTION_PLUGINS": f"{ROOT / 'roles/webui/action_plugins'}:{ROOT / 'plugins/action'}",
    }
    ran = subprocess.run(
        [Path(sys.executable).parent / "ansible-playbook", "-vvv", "-i", "localhost,", "-c", "local", "-e",
         json.dumps(variables), str(tmp_path / "play.yml")],
        capture_output=True, text=True, cwd=ROOT, env=run_env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["tree"]["action"] == "clone" and out["tree"]["after"] == sha
    assert "has no requirements_versions.txt" in out["venv"]["msg"]
    # The actions named each module's progress file (the modules alone take none): -vvv shows the arguments
    # (the project's callback prints results as YAML).
    assert f"progress_file: {home}/.tree." in ran.stdout
    assert f"progress_file: {tmp_path}/log/.bootstrap.log." in ran.stdout
    assert sorted(p.name for p in home.iterdir()) == ["tree"]
