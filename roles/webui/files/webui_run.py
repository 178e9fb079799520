#!/usr/bin/env python3
"""make run, step 2: start the WebUI (or ComfyUI, APP=comfyui) as the dummy user, wait until it answers, print
its URL.

Reads the settings playbooks/run.yml resolved (and deletes that file): the app's name, its command line and
directory (webui.sh in the WebUI tree by default; ComfyUI's venv python main.py ... from role comfyui's
run.yml). The app runs as the dummy (never
root: as root this drops to the dummy's uid, gid and groups before exec; as the dummy it runs directly)
in a session of its own, so Ctrl-C reaches this launcher only, which then stops the whole process group:
SIGTERM, a grace period for a request in progress, then SIGKILL.
"""

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

GRACE_SECONDS = 30
POLL_SECONDS = 0.5


def say(message):
    print(f"sdenv: {message}", flush=True)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http://127.0.0.1 from the spec
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (urllib.error.URLError, OSError):
        return False


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc, pgid):
    """SIGTERM the WebUI's process group, then SIGKILL whatever is left after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + (GRACE_SECONDS if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            proc.poll()
            if not group_alive(pgid):
                return
            time.sleep(0.2)
    proc.poll()


def main(spec_path):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    os.unlink(spec_path)
    account = pwd.getpwnam(spec["user"])
    app = spec.get("app", "the WebUI")
    if account.pw_uid == 0:
        say(f"{app} never runs as root: set sdenv_user_name to the dummy user.")
        return 2
    me = os.geteuid()
    if me not in (0, account.pw_uid):
        say(
            f"run make run as root (sudo) or as {spec['user']}: this account cannot start processes as another user."
        )
        return 2
    env = {
        "HOME": account.pw_dir, "USER": spec["user"], "LOGNAME": spec["user"], "SHELL": account.pw_shell,
        "PATH": spec["path"], "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": os.environ.get("TERM", "dumb"),
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    drop = {}
    if me == 0:
        groups = os.getgrouplist(spec["user"], account.pw_gid)
        drop = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": groups}
    stopping = []

    def request_stop(signum, _frame):
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    argv, cwd = spec.get("argv", ["bash", "webui.sh"]), spec.get("cwd", spec.get("webui_dir"))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, **drop)
    pgid = proc.pid  # the session leader's pid is its process group id
    say(f"starting {app} as {spec['user']} (pid {proc.pid}); waiting for {spec['url']}")
    announced = False
    while not stopping:
        code = proc.poll()
        if code is not None:
            if group_alive(pgid):
                stop_group(proc, pgid)
            say(
                f"{app} exited with code {code}"
                + ("" if announced else " before it answered: see its output above.")
            )
            return code if announced else (code or 1)
        if not announced and answers(spec["url"]):
            say(f"{app} is running at {spec['url']} (Ctrl-C stops it)")
            announced = True
        time.sleep(POLL_SECONDS)
    say(f"stopping {app} and everything it started ...")
    stop_group(proc, pgid)
    say("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
