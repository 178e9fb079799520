"""Progress of a long module run, shown on the controller: one place for every action plugin that shows it.

A module that runs for minutes (model_file's download, webui_git_tree's clone, webui_venv's install) writes a
small JSON document to a progress file on its host. The action plugin starts a ProgressWatch around the module
run: a thread of the worker process that `cat`s the file every POLL_SECONDS over a copy of the connection and
prints one line every PRINT_SECONDS through Ansible's display, as `[host] name  phase  ...`. The same thread
stops the worker when ansible-playbook is gone (kill -9 of make's process group reaches no worker).

Controller-only: it is imported by action plugins (never shipped to a host), and uses the standard library
only, so it imports the same from this repository and from the installed collection.

The document's keys (all optional):
  name, phase     what runs ("WebUI", "clone Receiving objects")
  detail          a sentence shown instead of numbers ("waiting: another run ...")
  received, total, rate, eta   bytes, bytes, bytes/s, seconds (model_file's download line)
  count, count_total, count_unit  items done and expected ("objects", "packages"); with them, received is
                  the MB moved so far and total is not used
  elapsed         seconds since the step started (the watch fills it in when asked to)
  idle            true: nothing measured yet (the watch's stand-in before the module writes the file)
  note            a few words shown last, in parentheses
"""

import copy
import json
import os
import shlex
import signal
import threading
import time

POLL_SECONDS = 2.0
PRINT_SECONDS = 5.0
# How often the watch checks that ansible-playbook is still there.
PARENT_SECONDS = 0.5
MB = 1_000_000


def clock(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def format_progress(doc):
    """One line: name, phase, then percent, amounts, MB/s, elapsed and ETA as far as the document knows them."""
    if doc.get("detail"):
        return f"{doc.get('name') or 'model'}  {doc.get('phase') or ''}: {doc['detail']}"
    received = doc.get("received") or 0
    total = doc.get("total")
    rate = doc.get("rate") or 0.0
    parts = [doc.get("name") or "model", doc.get("phase") or ""]
    if doc.get("idle"):
        pass  # nothing measured yet: name, phase and elapsed time
    elif doc.get("count_unit"):
        count, count_total, unit = doc.get("count") or 0, doc.get("count_total"), doc["count_unit"]
        if count_total:
            parts.append(f"{100.0 * count / count_total:5.1f}% {count}/{count_total} {unit}")
        else:
            parts.append(f"{count} {unit}")
        if doc.get("received") is not None:
            parts.append(f"{received / MB:.1f} MB")
        if rate:
            parts.append(f"{rate / MB:.1f} MB/s")
    else:
        if total:
            parts.append(f"{100.0 * received / total:5.1f}% {received // MB}/{total // MB} MB")
        else:
            parts.append(f"{received // MB} MB")
        parts.append(f"{rate / MB:.1f} MB/s")
    if doc.get("elapsed") is not None:
        parts.append(f"elapsed {clock(doc['elapsed'])}")
    eta = doc.get("eta")
    if eta is not None:
        parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
    if doc.get("note"):
        parts.append(f"({doc['note']})")
    return "  ".join(p for p in parts if p)


def side_copy(action):
    """A copy of the action with its own connection and become plugin: become keeps per-command state (the
    success marker it waits for), which two commands running at once must not share."""
    side = copy.copy(action)
    side._connection = copy.copy(action._connection)
    if side._connection.become is not None:
        side._connection.become = copy.copy(side._connection.become)
    return side


class ProgressWatch(threading.Thread):
    """While a module runs: stop this worker if ansible-playbook is gone, and show the module's progress.

    show(line) prints a line (Ansible's display.display). With idle (a document: name and phase), a step whose
    progress file says nothing yet is still shown, with its elapsed time; with elapsed=True every line carries
    the time since the watch started. model_file passes neither and keeps its download line as it was."""

    def __init__(self, action, progress_file, host, show, idle=None, elapsed=False):
        super().__init__(name="sdenv-progress-watch", daemon=True)
        self.progress_file = progress_file
        self.host = host
        self.show = show
        self.idle = idle
        self.elapsed = elapsed
        self.parent = os.getppid()
        self.done = threading.Event()
        self.side = side_copy(action)

    def stop(self):
        self.done.set()

    def run(self):
        started = time.monotonic()
        next_poll = started + POLL_SECONDS
        last_print = started if self.idle else 0.0
        while not self.done.wait(PARENT_SECONDS):
            if os.getppid() != self.parent:
                # ansible-playbook was killed without a word (kill -9 of make's process group). The worker's
                # own SIGTERM handler signals its process group and exits, which stops the module.
                os.kill(os.getpid(), signal.SIGTERM)
                return
            now = time.monotonic()
            if now < next_poll:
                continue
            next_poll = now + POLL_SECONDS
            doc = self.read_progress() or (dict(self.idle) if self.idle else None)
            if doc and (now - last_print >= PRINT_SECONDS) and not self.done.is_set():
                if self.elapsed:
                    doc["elapsed"] = now - started
                self.show(f"[{self.host}] {format_progress(doc)}")
                last_print = now

    def read_progress(self):
        try:
            out = self.side._low_level_execute_command(
                f"cat {shlex.quote(self.progress_file)} 2>/dev/null", sudoable=True
            ).get("stdout", "")
            doc = json.loads(out.strip() or "null")
        except Exception:  # progress is a courtesy: a failed poll never fails the module
            return None
        return doc if isinstance(doc, dict) else None


def progress_file_beside(path, what):
    """A progress file of this run's own next to path (the module can write there): `.<name>.<id>.<what>`."""
    import uuid

    path = path.rstrip("/")
    return os.path.join(
        os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.{what}.json"
    )


def progress_action(path_arg, idle):
    """The action plugin class of a module that writes progress (the WebUI's webui_git_tree and webui_venv):
    it names a progress file next to the module argument path_arg, runs the task's own module with a
    ProgressWatch around it (elapsed time on every line; the idle document, whose name may come from a module
    argument, until the module writes), and leaves check mode alone. Ansible imported here: controller only."""
    from ansible.plugins.action import ActionBase
    from ansible.utils.display import Display
    from ansible.utils.vars import merge_hash

    display = Display()

    class ProgressAction(ActionBase):
        def run(self, tmp=None, task_vars=None):
            result = super().run(tmp, task_vars)
            del tmp
            args = dict(self._task.args)
            if self._task.check_mode:
                return merge_hash(result, self._execute_module(module_args=args, task_vars=task_vars))
            args.setdefault("progress_file", progress_file_beside(args[path_arg], "progress"))
            shown = {**idle, "name": args.get(idle.get("name_arg") or "", idle["name"]), "idle": True}
            host = (task_vars or {}).get("inventory_hostname", "?")
            watch = ProgressWatch(
                self, args["progress_file"], host, display.display, idle=shown, elapsed=True
            )
            watch.start()
            try:
                final = self._execute_module(module_args=args, task_vars=task_vars)
            finally:
                watch.stop()
            return merge_hash(result, final)

    return ProgressAction
