"""sdenv_interrupt with real processes: a module child stops on a signal, and on its reader going away.

Each case runs a small Python child that does what model_file does (an InterruptGuard around work) with
its stdout on a pipe, the way the Ansible worker (or sshd) holds a module's stdout.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[2] / "plugins" / "module_utils"

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {utils!r})
    from sdenv_interrupt import InterruptGuard, Interrupted
    guard = InterruptGuard(interval=0.2, grace={grace!r}, payload_dir={payload!r})
    try:
        with guard:
            sys.stderr.write("working\\n"); sys.stderr.flush()
            time.sleep(120)   # a blocking call, as a download's recv is
    except Interrupted:
        with open({report!r}, "w") as fh:
            fh.write(("lost " if guard.controller_lost else "") + guard.reason)
        {after}
    """
)


def start(tmp_path, after="pass", grace=6.0, payload=None):
    code = CHILD.format(
        utils=str(UTILS), grace=grace, payload=payload, report=str(tmp_path / "report"), after=after
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert child.stderr.readline() == b"working\n"
    return child


def finish(child, timeout=10):
    try:
        child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_unwinds_the_work_with_its_reason(tmp_path, signum):
    child = start(tmp_path)
    time.sleep(0.5)
    assert child.stdout.read1(100).strip() == b""  # heartbeats: blank lines Ansible skips before the result
    child.send_signal(signum)
    finish(child)
    assert child.returncode == 0  # Interrupted was caught: every finally on the way ran
    assert (tmp_path / "report").read_text() == f"it received {signal.Signals(signum).name}"


def test_the_reader_going_away_stops_the_module_within_seconds(tmp_path):
    child = start(tmp_path)
    child.stdout.close()  # the worker (or the ssh session) is gone: nobody will read the result
    started = time.monotonic()
    finish(child)
    assert time.monotonic() - started < 3
    assert (tmp_path / "report").read_text() == "lost the controller that started it went away"


def test_a_second_signal_does_not_cut_the_cleanup_short(tmp_path):
    child = start(
        tmp_path, after="time.sleep(1.0); open({!r}, 'w').write('clean')".format(str(tmp_path / "done"))
    )
    child.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)  # an impatient second Ctrl-C while the partial file is being kept
    finish(child)
    assert (tmp_path / "done").read_text() == "clean" and child.returncode == 0


def test_work_stuck_after_the_stop_is_ended_and_its_payload_removed(tmp_path):
    payload = tmp_path / "ansible_model_file_payload_x1"
    payload.mkdir()
    (payload / "ansible_model_file_payload.zip").write_bytes(b"zip")
    child = start(tmp_path, after="time.sleep(120)", grace=1.0, payload=str(payload))
    child.send_signal(signal.SIGTERM)
    started = time.monotonic()
    finish(child)
    assert child.returncode == 1 and time.monotonic() - started < 5
    assert not payload.exists()


def test_payload_dir_is_only_ever_ansiballz_own():
    from sdenv_interrupt import ansiballz_payload_dir

    zipped = "/tmp/ansible_model_file_payload_ab12/ansible_model_file_payload.zip"
    assert ansiballz_payload_dir(zipped, "model_file") == "/tmp/ansible_model_file_payload_ab12"
    assert ansiballz_payload_dir("/home/me/ansible_model_file_payload.zip", "model_file") is None
    assert ansiballz_payload_dir(None, "model_file") is None
