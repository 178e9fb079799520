"""An interrupted download stops, resumes and never races, and its token never touches a disk (issue 12).

Real processes only. `make provision ARGS='--tags models -vvv'` runs the models role against a slow local
server (127.0.0.1, port 0) standing in for Civitai: a bearer token, then a presigned redirect to storage on
another origin, throttled so the download is still running when the test acts. Then:
- the controller is stopped three ways (kill -9 of make's whole process group, Ctrl-C as a terminal sends it
  to that group, SIGTERM to make alone); within 10 s nothing the run started is alive (found by a marker in
  the environment of every process it started, however deep: Ansible's workers leave make's process group),
  its module payload directory and progress file are gone, no async job file was written, the `.part` is
  kept, and the next run resumes it with a Range request the server logs;
- while the download runs and after it was stopped, the token is in no file under the temp directories,
  /var/log, ~/.ansible, ~/.ansible_async, the state directory and the WebUI tree (nor on any command line,
  nor in the -vvv output);
- two runs on one model at once end with one verified file, downloaded once, and the second run saying it
  waited for the first.
The module's payload directory goes to a temp directory of the test's own (TMPDIR, which the local
connection passes on), so "nothing left" is about this test's run only, whatever else runs meanwhile.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from model_fixtures import ModelServer, random_safetensors, sha256_hex
from sdenv_testlib import (
    ROOT,
    command_lines_holding,
    files_holding,
    make_argv,
    processes_marked,
    remove_system_tmp_dirs_of,
    run_make,
    system_tmp_dirs,
)
from test_models_role import host_vars, webui  # noqa: F401 (webui is a fixture)

TOKEN = "sdt-token-" + os.urandom(12).hex()
TOKEN_VAR = "SDT_INTERRUPT_TOKEN"
MARKER_VAR = "SDT_INTERRUPT_RUN"
SIZE = 6_000_000
RATE = 400_000  # bytes per second: 15 s for the whole file
STOPPED_WITHIN = 10.0


@pytest.fixture
def server():
    with ModelServer() as srv:
        yield srv


@pytest.fixture
def setup(test_inventory, webui, server, tmp_path):  # noqa: F811 (webui is the imported fixture)
    # A file that holds the token can only have been written by this test's runs, all after this moment.
    started = time.time() - 1
    blob = random_safetensors(SIZE, seed=21)
    server.add_storage("/bucket/slow", data=blob, rate=RATE)
    lock = [
        {
            "name": "testckpt",
            "kind": "checkpoint",
            "file": "testckpt.safetensors",
            "urls": [server.add("/api/download/models/7", token=TOKEN, presign="/bucket/slow")],
            "sha256": sha256_hex(blob),
            "size": len(blob),
            "source": "https://civitai.example/models/7",
            "trigger_words": [],
            "token_env": TOKEN_VAR,
        }
    ]
    inventory = test_inventory(**host_vars(webui, {"lock": lock}, tmp_path))
    dest = webui.parent / "sd-models" / "checkpoints" / "testckpt.safetensors"  # the model store
    return {
        "inventory": inventory,
        "blob": blob,
        "dest": dest,
        "part": Path(str(dest) + ".part"),
        "webui": webui,
        "started": started,
    }


class Run:
    """One `make provision` started the way a user starts it, in its own process group, with a marker in its
    environment and its own TMPDIR (where the host side of the local connection puts module payloads)."""

    def __init__(
        self, inventory, tmp_path, label, verbosity="-vvv", marker=None, lingering=(), env=None, argv=None
    ):
        self.marker = marker or new_marker(label)
        self.extra_env = env or {}
        # Processes that may outlive the run by design (the ssh ControlPersist master): (name, predicate).
        self.lingering = lingering
        self.tmp = host_tmp(tmp_path, label)
        self.async_dir = tmp_path / f"async-{label}"
        self.log = tmp_path / f"make-{label}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                argv or make_argv("provision", inventory, ARGS=f"--tags models {verbosity}"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )

    def env(self):
        return {
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            TOKEN_VAR: TOKEN,
            "TMPDIR": str(self.tmp),
            "ANSIBLE_ASYNC_DIR": str(self.async_dir),
            # Ansible's controller-side cache of module code; a killed ansible-playbook cannot remove its own.
            "ANSIBLE_LOCAL_TEMP": str(self.tmp.parent / f"controller-tmp-{self.marker}"),
            **self.extra_env,
            MARKER_VAR: self.marker,
        }

    @property
    def output(self):
        return self.log.read_text(errors="replace")

    def wait(self, timeout=600):
        return self.proc.wait(timeout=timeout)

    def leftovers(self, state_dir):
        """What this run left that a stopped run must not: live processes, payloads, job and progress files."""
        processes = {pid: _cmdline(pid) for pid in processes_marked(self.marker)}
        return {
            "processes": {
                pid: cmd for pid, cmd in processes.items() if not any(ok(cmd) for _, ok in self.lingering)
            },
            "payloads": sorted(p.name for p in self.tmp.iterdir()),
            "job files": sorted(p.name for p in self.async_dir.iterdir()) if self.async_dir.exists() else [],
            "progress files": sorted(p.name for p in (state_dir / "models").glob("*.progress.json")),
        }

    def kill_everything(self):
        for pid in processes_marked(self.marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def new_marker(label):
    return f"{label}-{os.urandom(6).hex()}"


def host_tmp(tmp_path, label):
    path = tmp_path / f"hosttmp-{label}"
    path.mkdir(exist_ok=True)
    return path


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def wait_for_bytes(run, part, at_least, timeout=180):
    deadline = time.monotonic() + timeout
    while not (part.exists() and part.stat().st_size >= at_least):
        assert run.proc.poll() is None, run.output[-4000:]
        assert time.monotonic() < deadline, "the download did not start:\n" + run.output[-4000:]
        time.sleep(0.05)


def token_roots(setup):
    """Where a token could land: temp directories, logs, Ansible's own, the state directory, the WebUI tree."""
    return sorted(
        {
            tempfile.gettempdir(),
            "/var/tmp",
            "/var/log",
            str(Path.home() / ".ansible"),
            str(Path.home() / ".ansible_async"),
            str(setup["inventory"].state_dir),
            str(setup["webui"]),
            str(setup["dest"].parent),
        }
    )


def token_files(setup):
    return files_holding(TOKEN, token_roots(setup), since=setup["started"])


# The progress thread polls every 2 s and prints at most every 5 s.
PRINT_WAIT = 5.0


def progress_docs(state_dir):
    docs = []
    for path in (state_dir / "models").glob("*.progress.json"):
        with contextlib.suppress(OSError, ValueError):
            docs.append(json.loads(path.read_text()))
    return docs


STOPS = {
    "kill -9 of make's process group": lambda proc: os.killpg(proc.pid, signal.SIGKILL),
    "Ctrl-C (SIGINT to make's process group)": lambda proc: os.killpg(proc.pid, signal.SIGINT),
    "SIGTERM to make": lambda proc: os.kill(proc.pid, signal.SIGTERM),
}


@pytest.mark.parametrize("how", list(STOPS))
def test_stopping_the_controller_stops_the_download_then_it_resumes(setup, server, tmp_path, how):
    interrupt_then_resume(setup, server, Run(setup["inventory"], tmp_path, "first"), how)


def interrupt_then_resume(setup, server, run, how):
    inventory, part, dest, blob = setup["inventory"], setup["part"], setup["dest"], setup["blob"]
    try:
        wait_for_bytes(run, part, 1_000_000)
        server.routes["__storage__/bucket/slow"].rate = 20_000  # hold it mid-body while the test looks around
        assert token_files(setup) == [], "the token is in a file while the download runs"
        assert command_lines_holding(TOKEN) == [], "the token is on a command line"
        assert run.leftovers(inventory.state_dir)["payloads"], "no module payload: is TMPDIR not the host's?"

        STOPS[how](run.proc)
        stopped = time.monotonic()
        while (
            any(run.leftovers(inventory.state_dir).values()) and time.monotonic() - stopped < STOPPED_WITHIN
        ):
            time.sleep(0.1)
        took = time.monotonic() - stopped
        left = run.leftovers(inventory.state_dir)
    finally:
        run.kill_everything()
        run.proc.wait(timeout=30)
    assert not any(left.values()), f"{how}: after {took:.1f} s these are left: {left}\n{run.output[-3000:]}"
    assert took < STOPPED_WITHIN
    print(f"{how}: everything the run started was gone {took:.1f} s after the signal")

    assert not dest.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(blob)
    assert token_files(setup) == [], "the token is in a file after the interruption"
    assert TOKEN not in run.output

    server.routes["__storage__/bucket/slow"].rate = None
    again = run_make(
        "provision", inventory, ARGS="--tags models -vvv", env={**run.env(), "ANSIBLE_NOCOLOR": "1"}
    )
    run.kill_everything()  # the re-run (same marker) is over; only an idle ssh master may be left of it
    assert again.returncode == 0, again
    assert f"testckpt: downloading, resuming from {kept / 1_000_000:.1f} MB kept in {part}" in again.output
    resume = server.requests_to("/bucket/slow")[-1]
    assert resume["range"] == f"bytes={kept}-", server.requests_to("/bucket/slow")
    assert resume["sent"] == len(blob) - kept
    assert dest.read_bytes() == blob and not part.exists()
    assert TOKEN not in again.output
    assert token_files(setup) == []


@pytest.fixture
def sshd(tmp_path):
    """A real sshd of this test's own on 127.0.0.1 (a free port), root login with a key made here, passing on
    TMPDIR and the run marker (AcceptEnv), so the host side of the run is found and scoped as locally."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary):
        pytest.skip("no sshd here: install openssh-server (.ci/run does) to run the SSH case")
    home = tmp_path / "sshd"
    home.mkdir(mode=0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {home}/host_key\nPidFile {home}/sshd.pid\n"
        f"AuthorizedKeysFile {home}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"AcceptEnv TMPDIR {MARKER_VAR}\n"
    )
    made_privsep_dir = not os.path.isdir("/run/sshd")  # the package's service makes it at boot
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    daemon = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(home / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=open(home / "sshd.log", "w"),  # noqa: SIM115 (closed with the process)
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert daemon.poll() is None and time.monotonic() < deadline, (home / "sshd.log").read_text()
            time.sleep(0.1)
        yield {"port": port, "key": home / "client_key", "home": home}
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        if made_privsep_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)


SSH_MASTER = ("the ssh ControlPersist master", lambda cmd: cmd.startswith("ssh: ") and "[mux]" in cmd)


def test_over_ssh_kill_9_of_the_controller_stops_the_download_on_the_host(
    setup, server, sshd, test_inventory, tmp_path
):
    """Over SSH no controller process group holds the module: only its stdout heartbeat can tell it the
    controller is gone (the worker exits, the ssh session closes, sshd closes the module's pipes)."""
    marker = new_marker("ssh")
    remote_tmp = host_tmp(tmp_path, "ssh")
    setenv = f"SetEnv=TMPDIR={remote_tmp} {MARKER_VAR}={marker}"
    setup["inventory"] = test_inventory(
        **{
            **setup["inventory"].variables,
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": sshd["port"],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(sshd["key"]),
            "ansible_ssh_common_args": (
                f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o '{setenv}'"
            ),
        }
    )
    # The control socket's directory is short: ansible.cfg's ControlPath is ssh's 40-character %C, to which ssh
    # adds a 17-character suffix while it binds, and a Unix socket's path holds at most 107 bytes (pytest's
    # tmp_path here is already 66).
    control_dir = tempfile.mkdtemp(prefix="sdtcp-", dir="/tmp")
    try:
        run = Run(
            setup["inventory"],
            tmp_path,
            "ssh",
            marker=marker,
            lingering=[SSH_MASTER],  # OpenSSH keeps an idle connection 60 s after any run, by design
            env={"ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir},
        )
        interrupt_then_resume(setup, server, run, "kill -9 of make's process group")
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def test_two_runs_on_one_model_download_it_once(setup, server, tmp_path):
    inventory, part, dest, blob = setup["inventory"], setup["part"], setup["dest"], setup["blob"]
    first = Run(inventory, tmp_path, "first", verbosity="-v")
    second = None
    server.routes[
        "__storage__/bucket/slow"
    ].rate = 50_000  # the first run holds the file until the second waits
    # Two `make provision` on one host take turns (the run lock: tests/integration/test_run_lock.py), so the
    # second writer here is another playbook using the models role on the same host, as a playbook of the
    # collection's own may: the model's download lock still keeps them to one writer.
    models_only = tmp_path / "models-only.yml"
    models_only.write_text(yaml.safe_dump([{"name": "Models only", "hosts": "all", "become": True,
                                            "roles": ["models"]}]))  # fmt: skip
    try:
        wait_for_bytes(first, part, 100_000)
        second = Run(inventory, tmp_path, "second", argv=[
            str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(models_only), "-v"
        ], env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})  # fmt: skip
        deadline = time.monotonic() + 300
        while not any(doc.get("phase") == "waiting" for doc in progress_docs(inventory.state_dir)):
            assert first.proc.poll() is None and second.proc.poll() is None, second.output[-4000:]
            assert time.monotonic() < deadline, "the second run never waited:\n" + second.output[-4000:]
            time.sleep(0.1)
        time.sleep(PRINT_WAIT)  # long enough for the second run's controller to show that it waits
        server.routes["__storage__/bucket/slow"].rate = None
        assert first.wait() == 0, first.output[-4000:]
        assert second.wait() == 0, second.output[-4000:]
    finally:
        for run in (first, second):
            if run is not None:
                run.kill_everything()
    assert dest.read_bytes() == blob and not part.exists()
    fetched = server.requests_to("/bucket/slow")
    assert len(fetched) == 1 and fetched[0]["sent"] == len(blob), fetched  # one writer, one download
    assert len(server.requests_to("/api/download/models/7")) == 1
    # The second run said what it did: waited for the first, then took the file the first one installed.
    assert re.search(
        r"testckpt: another run \(pid \d+\) is downloading it: waiting for that run", second.output
    )
    assert re.search(r"testckpt  waiting: another run \(pid \d+\) is writing \S+\.part", second.output)
    assert "testckpt was installed by another run" in second.output, second.output[-4000:]
    for run in (first, second):
        assert "Traceback" not in run.output and TOKEN not in run.output


def test_where_ansible_cannot_pipe_the_token_is_not_passed(setup, server, tmp_path):
    # keep_remote_files keeps the other modules' files here, and those of the tasks run as the dummy in
    # /var/tmp (scanned for the token, then removed).
    remote_tmp = tmp_path / "remote-tmp"
    kept_before = system_tmp_dirs()
    try:
        result = run_make(
            "provision",
            setup["inventory"],
            ARGS="--tags models",
            env={TOKEN_VAR: TOKEN, "ANSIBLE_KEEP_REMOTE_FILES": "1", "ANSIBLE_REMOTE_TMP": str(remote_tmp)},
        )
        assert result.returncode != 0
        assert (
            "refusing to run model_file on localhost: its token would end up in a file, because "
            "ANSIBLE_KEEP_REMOTE_FILES keeps every module and its arguments on the host: unset it"
        ) in result.output, result
        assert server.requests == []
        assert files_holding(TOKEN, [str(remote_tmp), *token_roots(setup)], since=setup["started"]) == []
    finally:
        remove_system_tmp_dirs_of(setup["inventory"].user, kept_before)
