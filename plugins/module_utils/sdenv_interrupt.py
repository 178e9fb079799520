"""A long-running module stops, cleanly and within seconds, when its run is interrupted.

Interrupted means: a signal reaches the module (Ctrl-C in the terminal, SIGTERM, SIGHUP when a terminal or
pty goes away), or the controller is gone without any signal reaching the host (kill -9 of `make`, the
Ansible worker killed, an SSH connection dropped). Stdlib only; runs on the target host
(`ansible.module_utils.sdenv_interrupt` there, plain `sdenv_interrupt` in unit tests).

Why a heartbeat: the toolkit runs long modules synchronously over pipelining (never under async_wrapper,
which detaches the module from the run and writes its arguments and result into files). The module's
stdout is then a pipe to the Ansible worker, directly (local connection) or through sshd and ssh. When the
worker dies, no signal is sent: a pipe only tells a *writer* that its reader is gone. So a thread writes
one newline to stdout every second (Ansible skips blank lines before a module's JSON result); the first
write that fails (EPIPE) means nobody will read the result any more, and the module stops exactly as it
does on SIGTERM. Over SSH the chain is: worker gone -> ssh (or its ControlMaster) cannot write the
module's output -> the channel closes -> sshd closes the module's pipes -> the next heartbeat fails.

Stopping is an exception, `Interrupted`, raised in the main thread by the signal handler (a heartbeat
failure sends SIGTERM to the main thread), so every `finally` runs: a download drains its pipeline, fsyncs
and keeps its partial file, and AnsiballZ's wrapper removes the module's payload directory. Should the
main thread not get out within `grace` seconds (stuck in the kernel), the guard removes the payload
directory itself and ends the process.
"""

import os
import shutil
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """The run was stopped. A BaseException, so no `except Exception` on the way up swallows it."""


class InterruptGuard:
    """Signal handlers plus the stdout heartbeat, for the duration of a module's work. Use in the main thread:

    with InterruptGuard(payload_dir=...) as guard:
        ...            # raises Interrupted when the run is stopped; guard.reason says why
    """

    def __init__(self, heartbeat_fd=1, interval=1.0, grace=6.0, payload_dir=None):
        self.heartbeat_fd = heartbeat_fd
        self.interval = interval
        self.grace = grace
        self.payload_dir = payload_dir
        self.reason = None
        self._main = threading.main_thread().ident
        self._quiet = threading.Event()
        self._lost = False
        self._thread = None

    def __enter__(self):
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        if self.heartbeat_fd is not None:
            self._thread = threading.Thread(target=self._heartbeat, name="sdenv-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        # The handlers stay: a stop that arrives while the result is being written still unwinds through
        # AnsiballZ's cleanup. Only the heartbeat ends, before the result goes to stdout.
        self.stop_heartbeat()
        return False

    @property
    def controller_lost(self):
        """True when the heartbeat found nobody reading this module's output."""
        return self._lost

    def stop_heartbeat(self):
        self._quiet.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _heartbeat(self):
        while not self._quiet.wait(self.interval):
            try:
                os.write(self.heartbeat_fd, b"\n")
            except OSError:
                # EPIPE (or a closed descriptor): whoever ran this module is gone.
                self._lost = True
                signal.pthread_kill(self._main, signal.SIGTERM)
                return

    def _on_signal(self, signum, frame):
        if self.reason is not None:
            return  # already stopping: let the cleanup finish
        if self._lost:
            self.reason = "the controller that started it went away"
        else:
            self.reason = f"it received {signal.Signals(signum).name}"
        self._quiet.set()
        threading.Thread(target=self._last_resort, name="sdenv-stop-deadline", daemon=True).start()
        raise Interrupted(self.reason)

    def _last_resort(self):
        threading.Event().wait(self.grace)
        if self.payload_dir:
            shutil.rmtree(self.payload_dir, ignore_errors=True)
        os._exit(1)


def ansiballz_payload_dir(modlib_path, module_name):
    """The payload directory AnsiballZ made for this module run (`_modlib_path` is the zip inside it),
    or None when the module does not run from one (unit tests, a module run by hand)."""
    if not modlib_path:
        return None
    directory = os.path.dirname(modlib_path)
    if os.path.basename(directory).startswith(f"ansible_{module_name}_payload_"):
        return directory
    return None
