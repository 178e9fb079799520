"""The everyday make targets against the floor of their own work (issue 21: "see it first").

`make bench BENCH=everyday` (or `python -m tests.bench everyday`). On a throwaway account provisioned against
the fixture host (tests/fixtures/fixture_host.py: every upstream served on loopback, a small WebUI-shaped
tree), each target runs as the user types it, a whole `make` command:
- `make provision` that changes nothing (its PLAY RECAP's changed= is printed, and which tasks changed; after
  a rollback's drift an untimed provision runs first, so nothing has changed since the last one),
- `make snapshot` (no change since the last one),
- `make verify` (static),
- `make provision CHECK=1`,
- `make rollback TO=<base> PATHS=<one file> CONFIRM=yes` after that one file of the WebUI tree changed.
Beside each, its floor: Ansible's own fixed cost (`ansible -m ansible.builtin.ping` on the same inventory)
plus the work alone, in a fresh process as the peers in the other benches:
- snapshot: the store's own no-change snapshot through its command line (`snapshot_store STORE snapshot`,
  a scratch store of the same roots): measured;
- rollback: the store's own rollback of the same one file (before-rollback snapshot included, as make's):
  measured;
- provision and CHECK=1: a stat of every file the snapshot roots hold (the WebUI tree with its venv,
  repositories and models, and the profile): approximated, the least a no-change run must look at;
- verify: that stat plus `git status` of the WebUI and each sub-repository: approximated, the checks' own
  commands are not separable from the testinfra suite that runs them.
Every figure is the median of ROUNDS runs (SDENV_BENCH_ROUNDS), the contenders taking turns in a rotating
order (bench_snapshot.Figures). Each make run records its task durations with ansible-core's own aggregate
callback, ansible.builtin.junit (ansible.posix.profile_tasks is not installed), enabled through
ANSIBLE_CALLBACKS_ENABLED; the stdout callback stays the project's. The table lists the five slowest tasks
(median over the rounds) and the tasks run per target: how many reach the host (a module round trip, each
loop item one) and how many stay on the controller (debug, set_fact, include_*, ...).
The fixture tree is small: absolute figures are small, the ratios are the point. The bench removes the
account (make remove-dummy), stops the fixture host and deletes its root, pass or fail.
SDENV_BENCH_DIR picks where the fixture root goes (default: a new directory under /var/tmp).
SDENV_BENCH_INVENTORY=<hosts.yml> measures an account an existing one-host inventory already provisioned (a
real WebUI tree, e.g. the manual lane's tests/manual/real_upstream_run.py) instead of building a fixture: the
same runs and floors; the account and its tree are left in place (the one-file rollback puts the file back
as the base snapshot holds it; that snapshot, labelled bench-base, stays in the account's store), and the
floors' scratch store goes under SDENV_BENCH_DIR, removed at the end.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.bench.bench_snapshot import Figures, store_env

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("SDENV_BENCH_ROUNDS") or 3)
SLOWEST = 5
ROLLBACK_FILE = "webui.py"  # a tracked file at the top of the WebUI tree
BASE_LABEL = "bench-base"
# Actions that run on the controller only: no module is sent to the host.
CONTROLLER_ACTIONS = {
    "add_host", "assert", "debug", "fail", "group_by", "import_playbook", "import_role", "import_tasks",
    "include_role", "include_tasks", "include_vars", "meta", "pause", "set_fact", "set_stats",
}  # fmt: skip
TASK_KEYWORDS = {
    "name", "when", "register", "vars", "loop", "loop_control", "with_items", "with_dict", "tags", "become",
    "become_user", "become_method", "check_mode", "diff", "changed_when", "failed_when", "ignore_errors",
    "no_log", "environment", "args", "delegate_to", "run_once", "until", "retries", "delay", "notify",
    "block", "rescue", "always", "any_errors_fatal", "throttle", "timeout", "listen", "module_defaults",
}  # fmt: skip
TARGETS = ("provision", "snapshot", "verify", "provision CHECK=1", "rollback of one file")


# --- pure parts (unit-tested in tests/unit/test_bench_everyday.py) --------------------------------------


def parse_junit(text: str) -> list[dict]:
    """Tasks of one ansible.builtin.junit report: name, seconds, status, path:line, items (loop results)."""
    tasks = []
    # The XML is the junit callback's own output, written by this bench's make run: not untrusted input.
    for case in ET.fromstring(text).iter("testcase"):  # noqa: S314
        if case.find("skipped") is not None:
            status = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            status = "failed"
        else:
            status = "ok"
        # "[host] play: task" (the junit callback's own format): the task's part is what names it here.
        name = re.sub(r"^\[[^\]]*\] ", "", case.get("name", "")).split(": ", 1)[-1]
        items, changed = 1, False
        out = case.find("system-out")
        if out is not None and out.text:
            try:
                result = json.loads(out.text)
            except ValueError:
                result = {}
            if isinstance(result, dict):
                changed = result.get("changed") is True
                if isinstance(result.get("results"), list):
                    items = len(result["results"])
        tasks.append(
            {
                "name": name,
                "seconds": float(case.get("time") or 0),
                "status": status,
                "where": case.get("classname", ""),
                "items": items,
                "changed": changed,
            }
        )
    return tasks


def task_action(lines: list[str], line: int) -> str:
    """The action of the task whose `- ` starts at 1-based `line` of a tasks file: its first key that is not
    a task keyword, without the collection prefix ('' if none is found)."""
    if not 0 < line <= len(lines):
        return ""
    first = lines[line - 1]
    indent = len(first) - len(first.lstrip(" -"))
    for n, text in enumerate(lines[line - 1 :]):
        stripped = text.strip()
        if n and stripped.startswith("- ") and len(text) - len(text.lstrip()) < indent:
            break
        if n and text.strip() and len(text) - len(text.lstrip()) < indent:
            break
        key = re.match(r"^[\s-]*([A-Za-z_][\w.]*):(\s|$)", text)
        if key and (len(text) - len(text.lstrip(" -"))) == indent and key.group(1) not in TASK_KEYWORDS:
            action = key.group(1).rsplit(".", 1)[-1]
            return "setup" if action == "hosts" else action  # a play's line: its fact gathering
    return ""


def _host_action(task: dict, read_lines) -> str:
    """The action of a task that ran and sent a module to the host; '' for a skipped or controller-only one."""
    if task["status"] == "skipped":
        return ""
    path, _, line = task["where"].rpartition(":")
    action = task_action(read_lines(path), int(line)) if line.isdigit() else ""
    return "" if action in CONTROLLER_ACTIONS else action


def host_actions(tasks: list[dict], read_lines=None) -> dict[str, int]:
    """Module round trips to the host by action (each loop item one) of one run's tasks, most first."""
    counts: dict[str, int] = {}
    for task in tasks:
        action = _host_action(task, read_lines or _read_lines)
        if action:
            counts[action] = counts.get(action, 0) + task["items"]
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def round_trips(tasks: list[dict], read_lines=None) -> tuple[int, int, int]:
    """(module round trips to the host, controller-only tasks, skipped tasks) of one run's tasks."""
    skipped = sum(task["status"] == "skipped" for task in tasks)
    on_host = [task for task in tasks if _host_action(task, read_lines or _read_lines)]
    return sum(task["items"] for task in on_host), len(tasks) - skipped - len(on_host), skipped


_LINES: dict[str, list[str]] = {}


def _read_lines(path: str) -> list[str]:
    if path not in _LINES:
        try:
            _LINES[path] = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            _LINES[path] = []
    return _LINES[path]


def slowest(runs: list[list[dict]], n: int = SLOWEST) -> list[tuple[str, float]]:
    """The n tasks with the longest median duration over the runs (a task is its name and place)."""
    by_task: dict[tuple[str, str], list[float]] = {}
    for tasks in runs:
        for task in tasks:
            by_task.setdefault((task["name"], task["where"]), []).append(task["seconds"])
    medians = [
        (f"{name} ({_short(where)})", statistics.median(times)) for (name, where), times in by_task.items()
    ]
    return sorted(medians, key=lambda item: -item[1])[:n]


def changed_tasks(runs: list[list[dict]]) -> list[str]:
    """The tasks that reported a change in any of the runs, in the order they ran (each once)."""
    names = [f"{t['name']} ({_short(t['where'])})" for tasks in runs for t in tasks if t.get("changed")]
    return list(dict.fromkeys(names))


def _short(where: str) -> str:
    return where.split(f"{ROOT}/", 1)[-1]


def task_seconds(runs: list[list[dict]]) -> float:
    """Median over the runs of the time spent inside tasks (the rest of the wall: start-up, parsing, pytest)."""
    return statistics.median(sum(task["seconds"] for task in tasks) for tasks in runs) if runs else 0.0


def recap_changed(output: str) -> int | None:
    """changed= of the PLAY RECAP's host lines, summed (None without a recap)."""
    found = re.findall(r"^\S+\s+:\s.*?\bchanged=(\d+)", output, re.M)
    return sum(int(n) for n in found) if found else None


def table(rows: list[dict]) -> str:
    """The summary: one line per target (wall, floor, ratio, changed=, round trips), then its slowest tasks."""
    head = (
        f"{'target':22s} {'wall s':>7s} {'floor s':>8s} {'ratio':>6s} {'in tasks s':>10s} {'changed':>7s}"
        f" {'host/ctl/skip tasks':>20s}"
    )
    out = [head, "-" * len(head)]
    for row in rows:
        changed = "" if row["changed"] is None else str(row["changed"])
        trips = "/".join(str(n) for n in row["trips"])
        ratio = f"{row['wall'] / row['floor']:5.1f}x" if row["floor"] else "-"
        out.append(
            f"{row['target']:22s} {row['wall']:7.2f} {row['floor']:8.2f} {ratio:>6s} {row['tasks']:10.2f}"
            f" {changed:>7s} {trips:>20s}"
        )
        out.extend(f"    {seconds:6.2f} s  {name[:110]}" for name, seconds in row["slowest"])
    return "\n".join(out)


# --- the run ------------------------------------------------------------------------------------------------


class Fixture:
    """The fixture host (its own process) and the throwaway account it names; stop() undoes both."""

    def __init__(self, base: Path):
        self.root = base / f"sdt-everyday-{secrets.token_hex(3)}"
        self.user = "sdt" + secrets.token_hex(4)
        env_file = base / "fixture.env"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.fixture_host", "--root", str(self.root), "--user", self.user,
             "--env-file", str(env_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.provisioned = False
        deadline = time.monotonic() + 300
        while not env_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fixture host did not start (no env file within 300 s)")
            time.sleep(0.2)
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        self.inventory = values["SDENV_FIXTURE_INVENTORY"]
        self.home = Path(f"/home/{self.user}")
        self.webui = self.home / "stable-diffusion-webui"

    def make(self, target: str, **variables: str) -> tuple[float, subprocess.CompletedProcess, Path]:
        """One `make TARGET INVENTORY=... VAR=...` as typed; (wall seconds, the process, its junit directory)."""
        junit = Path(tempfile.mkdtemp(prefix="junit-", dir=self.root))
        env = dict(
            os.environ,
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit",
            JUNIT_OUTPUT_DIR=str(junit),
            JUNIT_HIDE_TASK_ARGUMENTS="true",
        )
        argv = ["make", "--no-print-directory", target, f"INVENTORY={self.inventory}"]
        argv += [f"{k}={v}" for k, v in variables.items()]
        subprocess.run(["sync"], check=True)
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        return time.monotonic() - started, proc, junit

    def stop(self) -> bool:
        """Remove the account (when a provision ran), stop the host, delete its root; False if remove-dummy
        failed (its output is printed, and main() names the account that is left)."""
        removed = True
        try:
            if self.provisioned:
                _, proc, _ = self.make("remove-dummy", CONFIRM="yes")
                removed = proc.returncode == 0
                if not removed:
                    print(f"make remove-dummy failed: {proc.stdout[-2000:]}{proc.stderr[-1000:]}", flush=True)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            subprocess.run(["rm", "-rf", str(self.root)], check=False)
        return removed


def inventory_account(text: str) -> tuple[str, str | None]:
    """(account, WebUI directory or None for the default) of a one-host inventory's YAML, for
    SDENV_BENCH_INVENTORY; ValueError with one sentence when it names other than one host or no literal
    sdenv_user_name."""
    hosts: dict = {}

    def walk(group):
        if isinstance(group, dict):
            hosts.update({name: values or {} for name, values in (group.get("hosts") or {}).items()})
            for child in (group.get("children") or {}).values():
                walk(child)

    data = yaml.safe_load(text) or {}
    for group in data.values() if isinstance(data, dict) else ():
        walk(group)
    if len(hosts) != 1:
        raise ValueError(
            f"SDENV_BENCH_INVENTORY names {len(hosts)} hosts, expected one; point it at a one-host inventory."
        )
    values = next(iter(hosts.values()))
    user, webui = values.get("sdenv_user_name"), values.get("sdenv_webui_dir")
    if not isinstance(user, str) or not user or "{{" in user:
        raise ValueError(
            "SDENV_BENCH_INVENTORY's host has no literal sdenv_user_name; set the account the inventory provisions."
        )
    return user, webui if isinstance(webui, str) and "{{" not in webui else None


class Existing(Fixture):
    """An account an existing inventory already provisioned (SDENV_BENCH_INVENTORY): no fixture host is started
    and stop() leaves the account and its tree in place."""

    def __init__(self, inventory: Path, base: Path):
        self.inventory = str(inventory.resolve())
        self.user, webui = inventory_account(inventory.read_text(encoding="utf-8"))
        self.root = base
        self.proc = None
        self.provisioned = False
        self.home = Path(pwd.getpwnam(self.user).pw_dir)
        self.webui = Path(webui) if webui else self.home / "stable-diffusion-webui"

    def stop(self) -> bool:
        return True


def timed(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> float:
    subprocess.run(["sync"], check=True)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr[-800:]}")
    return seconds


def change_file(path: Path, tag: str) -> None:
    """Change one file as a user's edit would: appended to, owner and mode kept; past the racy window."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"\n# changed by bench_everyday {tag}\n")
    time.sleep(2.5)


def main() -> int:
    base = Path(
        os.environ.get("SDENV_BENCH_DIR") or tempfile.mkdtemp(prefix="sdenv-everyday-", dir="/var/tmp")
    )
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # noqa: S103 - the dummy reads the fixture's wheelhouse below it
    load_start = os.getloadavg()
    print(
        f"load average at the start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True
    )
    existing = os.environ.get("SDENV_BENCH_INVENTORY")
    try:
        fixture = Existing(Path(existing), base) if existing else Fixture(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    if existing:
        print(f"existing inventory {fixture.inventory}, account {fixture.user} (left in place)", flush=True)
    else:
        print(f"fixture host at {fixture.root}, throwaway account {fixture.user}", flush=True)
    try:
        return run(fixture, base, load_start)
    finally:
        removed = fixture.stop()
        shutil.rmtree(base, ignore_errors=True)
        if existing:
            print(f"left {fixture.user} in place, deleted {base}", flush=True)
        else:
            done = f"removed {fixture.user} (make remove-dummy)" if removed else f"{fixture.user} NOT removed"
            print(f"{done}, stopped the fixture host, deleted {base}", flush=True)


def run(fixture: Fixture, base: Path, load_start: tuple) -> int:
    fig = Figures()
    runs: dict[str, list[list[dict]]] = {t: [] for t in TARGETS}
    changed: dict[str, list] = {t: [] for t in TARGETS}
    reports = fixture.root / "reports"

    def make(target_label: str, target: str, **variables) -> float:
        seconds, proc, junit = fixture.make(target, **variables)
        if proc.returncode:
            raise RuntimeError(
                f"make {target} failed ({proc.returncode}): {proc.stdout[-3000:]}{proc.stderr[-1000:]}"
            )
        for report in sorted(junit.glob("*.xml")):
            runs[target_label].append(parse_junit(report.read_text(encoding="utf-8")))
        changed[target_label].append(recap_changed(proc.stdout))
        return seconds

    t = time.monotonic()
    fixture.provisioned = True  # from here on, remove-dummy cleans up whatever a failed provision left
    make("provision", "provision")
    runs["provision"].clear()
    changed["provision"].clear()
    make("snapshot", "snapshot", LABEL=BASE_LABEL)
    runs["snapshot"].clear()
    changed["snapshot"].clear()
    print(
        f"provisioned {fixture.user} and took the base snapshot in {time.monotonic() - t:.0f} s", flush=True
    )

    target_file = fixture.webui / ROLLBACK_FILE
    roots = [str(fixture.webui), str(fixture.home / ".zprofile")]
    senv = store_env(base / "lib")
    store = base / "store"
    store_cli = [sys.executable, "-c", "import sys; from snapshot_store.cli import main; sys.exit(main())"]
    scratch_base = json.loads(
        subprocess.run([*store_cli, str(store), "snapshot", *roots], env=senv, capture_output=True, text=True,
                       check=True).stdout
    )["id"]  # fmt: skip
    keep = [str(fixture.webui / d) for d in ("outputs", "log")]
    walk = (
        "import os, sys\nfor root in sys.argv[1:]:\n"
        "    os.lstat(root)\n"
        "    for d, ds, fs in os.walk(root):\n        [os.lstat(os.path.join(d, n)) for n in ds + fs]"
    )
    subrepos = sorted(p for p in (fixture.webui / "repositories").iterdir() if (p / ".git").exists())
    repos = [fixture.webui, *subrepos]
    ansible_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    venv_bin = ROOT / ".venv" / "bin"
    tag = iter(range(10000))

    # A rollback rewrites its file in the WebUI tree (new inode and ctime): the next provision sees that drift
    # and rightly runs the webui role in full. The provision targets measure a provision with nothing changed,
    # so after a rollback the next of them is preceded by one untimed provision that re-records the state.
    drifted = [False]
    settled = [0]

    def settle():
        if drifted[0]:
            _, proc, _ = fixture.make("provision")
            if proc.returncode:
                raise RuntimeError(f"the untimed provision after a rollback failed: {proc.stdout[-3000:]}")
            drifted[0] = False
            settled[0] += 1

    def provision(label, **variables):
        settle()
        return {label: make(label, "provision", **variables)}

    def rollback(_r):
        change_file(target_file, f"make {next(tag)}")
        drifted[0] = True
        return {"rollback of one file": make(
            "rollback of one file", "rollback", TO=BASE_LABEL, PATHS=str(target_file), CONFIRM="yes")}  # fmt: skip

    def store_rollback(_r):
        change_file(target_file, f"store {next(tag)}")
        drifted[0] = True
        argv = [*store_cli, str(store), "rollback", scratch_base, "--path", str(target_file)]
        return {"floor store rollback": timed(argv + [a for k in keep for a in ("--keep", k)], env=senv)}

    def git_status():
        # Root reads the dummy's repositories: git refuses another owner's repository without safe.directory.
        return sum(
            timed(
                [
                    "git",
                    "--no-optional-locks",
                    "-c",
                    "safe.directory=*",
                    "-C",
                    str(repo),
                    "status",
                    "--porcelain",
                ]
            )
            for repo in repos
        )

    contenders = {
        "provision": lambda r: provision("provision"),
        "snapshot": lambda r: {"snapshot": make("snapshot", "snapshot")},
        "verify": lambda r: {"verify": make("verify", "verify", VERIFY_REPORTS=str(reports))},
        "check": lambda r: provision("provision CHECK=1", CHECK="1"),
        "rollback": rollback,
        "ping": lambda r: {
            "floor ping": timed(
                [str(venv_bin / "ansible"), "-i", fixture.inventory, "all", "-m", "ansible.builtin.ping"],
                env=ansible_env,
                cwd=ROOT,
            )
        },
        "walk": lambda r: {"floor stat walk": timed([sys.executable, "-c", walk, *roots])},
        "store snapshot": lambda r: {
            "floor store snapshot": timed([*store_cli, str(store), "snapshot", *roots], env=senv)
        },
        "store rollback": store_rollback,
        "git": lambda r: {"floor git status": git_status()},
    }
    print(f"{ROUNDS} rounds of {len(contenders)} contenders ...", flush=True)
    fig.rounds(ROUNDS, contenders)

    ping, walk_s = fig["floor ping"], fig["floor stat walk"]
    floors = {
        "provision": ping + walk_s,
        "snapshot": ping + fig["floor store snapshot"],
        "verify": ping + walk_s + fig["floor git status"],
        "provision CHECK=1": ping + walk_s,
        "rollback of one file": ping + fig["floor store rollback"],
    }
    rows = []
    for target in TARGETS:
        trips = [round_trips(tasks) for tasks in runs[target]]
        rows.append(
            {
                "target": target,
                "wall": fig[target],
                "floor": floors[target],
                "changed": max((c for c in changed[target] if c is not None), default=None),
                "trips": tuple(int(statistics.median(t[i] for t in trips)) for i in range(3))
                if trips
                else (0, 0, 0),
                "slowest": slowest(runs[target]),
                "tasks": task_seconds(runs[target]),
            }
        )
    print("\nwall seconds, median of the runs (the runs in brackets, in the order they ran):")
    for name, values in fig.runs.items():
        print(f"  {name:28s} {fig[name]:7.3f}   [{' '.join(f'{v:.3f}' for v in values)}]")
    print(
        "\nfloors: ping + store snapshot, ping + store rollback (measured); ping + stat walk for provision and"
        " CHECK=1, + git status for verify (approximated)\n"
    )
    print(table(rows))
    print(
        f"\n{settled[0]} untimed provisions re-recorded the state after a rollback's drift, so that each timed"
        " provision changed nothing"
    )
    load_end = os.getloadavg()
    print(
        f"\nload average: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at the start, "
        f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end; {os.cpu_count()} CPUs"
    )
    print("\nmodule round trips to the host by action (the last round):")
    for target in TARGETS:
        counts = host_actions(runs[target][-1]) if runs[target] else {}
        print(f"  {target}: {', '.join(f'{a} {n}' for a, n in counts.items()) or 'none'}")
    print("\ntasks that reported a change (any round):")
    for target in TARGETS:
        print(f"  {target}: {'; '.join(changed_tasks(runs[target])) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
