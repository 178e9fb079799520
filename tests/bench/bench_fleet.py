"""A fleet against one host, over SSH: `make bench BENCH=fleet` (as root: it starts the fleet lab).

The hosts are the fleet lab's (tests/fixtures/fleet_lab.py through fleet_fixture.py, as the integration test
test_fleet_life.py uses them): each its own root filesystem, user database and network namespace, reached by
the controller only over SSH as a sudo login. One lab of 2N + 1 hosts and one fixture upstream
(tests/fixtures/fixture_host.py, served on loopback) serve the three measurements of one run: first one host
(the last) provisioned from nothing, fetching for itself (the fleet cache is auto: off for one host), then
N others provisioned from nothing at once with the fleet cache on, then the last N the same way without it
(sdenv_fleet_cache: never; for reference: the cache's own cost), each through the real `make provision` and
each with a controller cache of its own (nothing cached anywhere before it).

Reported, as ratios N hosts / 1 host (targets from issue 24):
- bytes fetched from upstream: the fixture server's request log (file sizes of what it served). Target <= 1.05x.
- wall time of the whole `make provision`. Target <= 1.5x.
- CPU seconds of each run, the controller's (this process, which serves the fixture and the lab's forwarders;
  make and what it waited for; the ssh ControlPersist masters) and the hosts' (every process of their pid
  namespaces), and what the rest of this machine used meanwhile: not targets, the reason when the time misses.
  The least time ratio the CPU allows: here, where the N hosts share this machine's cores, and on N machines of
  their own, where only the controller's part shares the controller's cores.
- the tasks whose span (Ansible's log_path timestamps) grew most from 1 host to N: serial steps,
  and the fleet cache's fill and copies, which only the N-host run has.
SDENV_BENCH_FLEET_HOSTS sets N (default 4); SDENV_BENCH_FLEET_LOGS=dir keeps both runs' Ansible logs there.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests" / "fixtures", ROOT / "tests" / "integration"):
    sys.path.insert(0, str(path))

from fleet_cache_fixtures import request_counts, served_bytes  # noqa: E402
from fleet_fixture import fixture_fleet  # noqa: E402
from sdenv_testlib import run_make  # noqa: E402

BYTES_TARGET = 1.05
TIME_TARGET = 1.5
TICKS = os.sysconf("SC_CLK_TCK")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
RESULT = re.compile(r"^.{24}.*?\| (ok|changed|failed|fatal|skipping|included|unreachable): ")
TASK_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?\| (TASK|RUNNING HANDLER) \[(.*)\]")


def _proc_cpu(pid):
    """utime + stime + cutime + cstime of a live process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICKS  # fields 14-17 of proc(5), after pid and comm


def host_cpu(lab, names):
    """CPU seconds spent so far inside the named lab hosts: every live process of the host's pid namespace,
    with the children each has reaped (a dead process's time is in its parent's cutime/cstime, so nothing
    is counted twice)."""
    namespaces = set()
    for name in names:
        unshare = lab.host(name).pid
        (init,) = Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
        namespaces.add(os.readlink(f"/proc/{init}/ns/pid"))
    total = 0.0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            inside = os.readlink(f"/proc/{entry}/ns/pid") in namespaces
        except OSError:
            continue
        total += _proc_cpu(entry) if inside else 0.0
    return total


def controller_cpu(lab):
    """CPU seconds of this process (the fixture server and the lab's forwarders are its threads), of the
    children it has waited for (make and everything make waited for), and of the lab's ssh ControlPersist
    masters (they leave make's process tree, and do each connection's encryption)."""
    own = os.times()
    masters = lab._ssh_masters()  # the lab's own lookup of the ssh processes that use its key
    return own.user + own.system + own.children_user + own.children_system + sum(map(_proc_cpu, masters))


def task_spans(log_path):
    """{task name: seconds} from an Ansible log_path file: a task runs from the previous task's last line to
    its own last line (summed when a task name repeats). Not from banner to banner: the default callback,
    with display_skipped_hosts off, prints a task's banner with its first result, so a banner comes when the
    task's first host is done. A task every host skipped prints nothing: its time is in the next one's."""
    tasks = []  # [name, first stamp, last stamp]
    for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        stamp = STAMP.match(line)
        if not stamp:
            continue
        when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        match = TASK_LINE.match(line)
        if match:
            tasks.append([match.group(3), when, when])
        elif tasks and RESULT.match(line):  # not a progress line a module prints while it runs
            tasks[-1][2] = when
    spent = {}
    for index, (name, first, last) in enumerate(tasks):
        began = tasks[index - 1][2] if index else first
        spent[name] = spent.get(name, 0.0) + (last - began).total_seconds()
    return spent


def busy_seconds():
    """CPU seconds this machine's cores have been busy since boot (every process's, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / TICKS  # guest time is already inside user


def provisioned(fleet, names, directory, **overrides):
    """{upstream, requests, repeated, seconds, controller, hosts, others, load, tasks} of one cold
    `make provision` of the named hosts; controller, hosts and others are CPU seconds (others: what the rest
    of this machine used meanwhile, which slows the run down and is no part of it)."""
    directory.mkdir()
    inventory = fleet.write_inventory(
        directory / "inventory",
        hosts=names,
        # Wheels from the fixture's index over HTTP (so the server's log sees them), a controller cache of
        # this measurement's own (empty).
        sdenv_webui_wheelhouse="",
        sdenv_webui_pip_index_url=f"{fleet.server.url}/index/simple",
        sdenv_fleet_cache_dir=str(directory / "controller-cache"),
        **overrides,
    )
    log = directory / "ansible.log"
    start = len(fleet.server.requests)
    # The masters of the run before would exit 60 s into this one, and their whole CPU would be taken off
    # this run's controller figure: each run starts with none and counts its own.
    fleet.lab.end_ssh_masters()
    before = (controller_cpu(fleet.lab), host_cpu(fleet.lab, names), busy_seconds())
    began = time.monotonic()
    result = run_make("provision", inventory, env={"ANSIBLE_LOG_PATH": str(log), "LANGUAGE": "en"})
    seconds = time.monotonic() - began
    controller = controller_cpu(fleet.lab) - before[0]
    hosts = host_cpu(fleet.lab, names) - before[1]
    others = max(0.0, busy_seconds() - before[2] - controller - hosts)
    if result.returncode != 0:
        raise RuntimeError(f"make provision of {len(names)} hosts failed:\n{result.output[-3000:]}")
    requests = fleet.server.requests[start:]
    return {
        "upstream": served_bytes(fleet.fixture.served, requests),
        "requests": len(requests),
        "repeated": {p: n for p, n in request_counts(requests).items() if n > 1 and not p.endswith("/")},
        "seconds": seconds,
        "controller": controller,
        "hosts": hosts,
        "others": others,
        "tasks": task_spans(log),
    }


def measure(hosts):
    directory = Path(f"/tmp/sdt-benchfleet-{secrets.token_hex(4)}")  # short: the lab's sockets live under it
    directory.mkdir(mode=0o700)
    runs = {}
    try:
        with fixture_fleet(directory, count=2 * hosts + 1) as fleet:
            runs["one"] = provisioned(fleet, fleet.names[-1:], directory / "one")
            runs["many"] = provisioned(fleet, fleet.names[:hosts], directory / "many")
            # The same N hosts' work without the fleet cache (each fetches for itself): what the cache itself
            # costs or saves in time, apart from what N hosts on these cores cost.
            runs["never"] = provisioned(
                fleet, fleet.names[hosts:-1], directory / "never", sdenv_fleet_cache="never"
            )
    finally:
        keep = os.environ.get("SDENV_BENCH_FLEET_LOGS")  # a directory to keep the runs' Ansible logs in
        for run_name in runs if keep else ():
            if (directory / run_name / "ansible.log").exists():
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(directory / run_name / "ansible.log", Path(keep) / f"{run_name}.log")
        shutil.rmtree(directory, ignore_errors=True)
    return rows(hosts, runs["one"], runs["many"], without=runs["never"])


def rows(hosts, one, many, cores=None, without=None):
    """The printed rows (name, value, note) for one measurement of 1 host and one of `hosts` hosts (and, when
    given, one of `hosts` other hosts without the fleet cache)."""
    cores = cores or os.cpu_count() or 1
    ratio = many["upstream"] / one["upstream"] if one["upstream"] else float("inf")
    time_ratio = many["seconds"] / one["seconds"]
    cpu_one, cpu_many = one["controller"] + one["hosts"], many["controller"] + many["hosts"]
    # The least time N hosts' CPU seconds can take as a multiple of one host's time: here, where the hosts
    # share this machine's cores; on N machines, where only the controller's part shares the controller's.
    floor_here = cpu_many / cores / one["seconds"]
    floor_machines = max(many["controller"] / cores, many["hosts"] / hosts) / one["seconds"]
    # Over every task of either run: the fleet cache's fill and copies run only in the N-host run.
    names = dict.fromkeys([*one["tasks"], *many["tasks"]])
    only = [n for n in many["tasks"] if n not in one["tasks"]]
    grown = sorted(
        ((many["tasks"].get(n, 0.0) - one["tasks"].get(n, 0.0), n, one["tasks"].get(n, 0.0)) for n in names),
        reverse=True,
    )[:8]
    return [
        ("bytes from upstream, 1 host", f"{one['upstream']:,} B in {one['requests']} requests", ""),
        (f"bytes from upstream, {hosts} hosts", f"{many['upstream']:,} B in {many['requests']} requests",
         f"{len(many['repeated'])} files fetched twice or more" if many["repeated"] else "every file once"),
        (f"ratio upstream {hosts} hosts / 1 host", f"{ratio:.3f}x",
         f"target <= {BYTES_TARGET}x: " + ("met" if ratio <= BYTES_TARGET else "NOT met")),
        (f"wall time {hosts} hosts / 1 host", f"{time_ratio:.2f}x",
         f"{many['seconds']:.0f} s vs {one['seconds']:.0f} s; target <= {TIME_TARGET}x: "
         + ("met" if time_ratio <= TIME_TARGET else "NOT met")),
        (f"CPU {hosts} hosts / 1 host", f"{cpu_many / cpu_one:.2f}x",
         f"controller {many['controller']:.0f} s vs {one['controller']:.0f} s, hosts {many['hosts']:.0f} s "
         f"vs {one['hosts']:.0f} s"),
        ("CPU of other processes meanwhile", f"{many['others']:.0f} s vs {one['others']:.0f} s",
         "the rest of this machine (not the runs): it slows them down"),
        (f"least time ratio on {cores} cores", f"{floor_here:.2f}x",
         f"{hosts} hosts' CPU on this machine's cores; on {hosts} machines of their own: {floor_machines:.2f}x"),
        ("tasks only the fleet run has", f"{sum(many['tasks'][n] for n in only):.1f} s",
         f"{len(only)} tasks: the fleet cache's fill (before any host goes on) and the hosts' copies"),
        *(
            [(f"{hosts} hosts without the fleet cache / 1 host",
              f"time {without['seconds'] / one['seconds']:.2f}x, upstream {without['upstream'] / one['upstream']:.2f}x",
              f"{without['seconds']:.0f} s; CPU {(without['controller'] + without['hosts']) / cpu_one:.2f}x")]
            if without else []
        ),
        *((f"  grew: {name[:60]}", f"+{delta:.1f} s", f"{spent:.1f} s -> {spent + delta:.1f} s")
          for delta, name, spent in grown),
    ]  # fmt: skip


def main():
    if os.geteuid() != 0:
        print(
            "bench_fleet starts the fleet lab (namespaces, mounts): run it as root (make bench BENCH=fleet)."
        )
        return 1
    hosts = int(os.environ.get("SDENV_BENCH_FLEET_HOSTS", "4"))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    table = measure(hosts)
    width = max(len(r[0]) for r in table)
    for name, value, note in table:
        print(f"{name.ljust(width)}  {value}  {note}".rstrip(), flush=True)
    return 0 if all("NOT met" not in r[2] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
