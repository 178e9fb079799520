"""Snapshot store vs cp -a, rsync, restic and borg on one synthetic WebUI-like environment.

`make bench BENCH=snapshot` (or `python -m tests.bench snapshot`). Every peer is measured in the same run on the
same tree. How the figures are made fair:
- Every figure is the median of ROUNDS runs (the no-change snapshot and the Python walk, a tenth of a second
  each: QUICK_ROUNDS), and the contenders take turns in a rotating order (round r starts with the r-th), so no
  one always runs first on a cold cache or right after another's writeback.
- Every step starts after an untimed `sync`: the peers write gigabytes into the page cache without waiting for
  the disk, and without it the next step (often ours, which fsyncs) would pay for their writeback.
- The peers that write a copy (cp -a, rsync) are also timed with a final `sync`, the fair comparison for a
  store that makes everything durable before it reports success; both figures are printed.
- The store runs as its own command line, a fresh Python process each time as the peers are fresh processes,
  the way an installed Python program runs: imported, with its bytecode compiled once beforehand, as pip and
  Debian do at install. This machine sets PYTHONDONTWRITEBYTECODE=1, so the bench compiles a copy of the
  store's modules in its own directory. The no-change snapshot is also timed run as a script, for reference.
The targets printed are the team's (issues 6 and 14). The load average is printed at the start and the end:
figures taken with anything else running are not comparable.

Environment (about the shape of a real WebUI tree with its venv): ~20k small files totalling ~400 MB in
~1,700 directories, ~300 symlinks, plus two 1 GiB incompressible model files.
SDENV_BENCH_DIR picks where it is built (default: a new directory under /var/tmp); it is removed at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE_PKG = ROOT / "roles" / "snapshot" / "module_utils" / "snapshot_store"
STORE_PATH = [STORE_PKG.parent, ROOT / "plugins" / "module_utils"]
N_DIRS = 1700
N_FILES = 20000
SMALL_TOTAL = 400 * 1024 * 1024
N_LINKS = 300
MODEL = 1024 * 1024 * 1024
PEERS = ("restic", "borg", "rsync")
ROUNDS = 3  # every figure: the median of this many runs, in rotating order
QUICK_ROUNDS = 5  # the no-change snapshot of ours and the Python walk (a tenth of a second each)
RACY_WAIT = 2.5  # past the store's 2 s racy window, as any real next snapshot would be


def ensure_peers() -> None:
    missing = [p for p in PEERS if shutil.which(p) is None]
    if missing:
        print(f"installing {', '.join(missing)} with apt-get", flush=True)
        pkgs = ["borgbackup" if p == "borg" else p for p in missing]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"], check=False, env=env)
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", *pkgs], check=True, env=env
        )


def settle() -> None:
    """Write back what the previous step left dirty, untimed, so no step pays for another's writeback."""
    subprocess.run(["sync"], check=True)


def run(argv: list[str], env: dict | None = None) -> float:
    """Wall seconds of one command (after settle())."""
    settle()
    t = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({p.returncode}): {p.stderr[-800:]}")
    return dt


def run_then_sync(argv: list[str]) -> tuple[float, float]:
    """(seconds of the command, seconds of the command and a final sync): a peer that writes a copy."""
    t = run(argv)
    s = time.monotonic()
    subprocess.run(["sync"], check=True)
    return t, t + time.monotonic() - s


def build_env(root: Path, rng: random.Random) -> list[Path]:
    """The synthetic tree; returns the small files (for churn)."""
    dirs = [root]
    for i in range(N_DIRS - 1):
        parent = dirs[rng.randrange(len(dirs))] if i > 20 else root
        d = parent / f"d{i:04d}"
        d.mkdir()
        dirs.append(d)
    # Log-uniform sizes like a venv (many tiny .py files, some larger .so), scaled to the total.
    raw = [int(2 ** rng.uniform(7, 17.5)) for _ in range(N_FILES)]
    scale = SMALL_TOTAL / sum(raw)
    blob = os.urandom(1 << 20)
    files = []
    for i, size in enumerate(raw):
        size = max(1, int(size * scale))
        p = dirs[rng.randrange(len(dirs))] / f"f{i:05d}.py"
        off = rng.randrange(0, (1 << 20) - min(size, 1 << 19))
        data = (blob[off : off + size] if size <= (1 << 19) else os.urandom(size)) + i.to_bytes(4, "little")
        p.write_bytes(data)
        files.append(p)
    for i in range(N_LINKS):
        target = files[rng.randrange(len(files))]
        link = dirs[rng.randrange(len(dirs))] / f"l{i:03d}"
        os.symlink(os.path.relpath(target, link.parent), link)
    (root / "models").mkdir()
    for name in ("modelA.safetensors", "modelB.safetensors"):
        write_random(root / "models" / name, MODEL)
    return files


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def churn(root: Path, files: list[Path], rng: random.Random, tag: str, replace_model: bool) -> None:
    """1% of the small files: a third modified, a third removed, a third added; optionally a new model."""
    k = len(files) // 100
    picks = rng.sample(range(len(files)), k)
    for n, i in enumerate(picks):
        p = files[i]
        if not p.exists():
            continue
        if n % 3 == 0:
            p.write_bytes(os.urandom(max(1, p.stat().st_size)))
        elif n % 3 == 1:
            p.unlink()
        else:
            (p.parent / f"new-{tag}-{n}.py").write_bytes(os.urandom(4096))
    if replace_model:
        write_random(root / "models" / "modelB.safetensors", MODEL)
    subprocess.run(["sync"], check=True)


def du(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for n in filenames:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def store_env(lib: Path) -> dict:
    """The environment the store runs in: a byte-compiled copy of its modules in `lib` on PYTHONPATH."""
    lib.mkdir()
    for d in STORE_PATH:
        for src in d.glob("*.py"):
            shutil.copy2(src, lib / src.name)
    shutil.copytree(STORE_PKG, lib / STORE_PKG.name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(lib)], check=True)
    return dict(os.environ, PYTHONPATH=str(lib))


STORE_ENV: dict = {}


def ours(store: Path, *args: str, as_script: bool = False) -> tuple[float, dict]:
    settle()
    argv = (
        [str(STORE_PKG)]
        if as_script
        else ["-c", "import sys; from snapshot_store.cli import main; sys.exit(main())"]
    )
    t = time.monotonic()
    p = subprocess.run(
        [sys.executable, *argv, str(store), *args],
        env=None if as_script else STORE_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"snapshot_store {args[0]} failed: {p.stderr[-800:]}")
    return dt, json.loads(p.stdout)


class Figures:
    """Every run of every contender, by name; medians on demand."""

    def __init__(self) -> None:
        self.runs: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.runs.setdefault(name, []).append(seconds)

    def __getitem__(self, name: str) -> float:
        return statistics.median(self.runs[name])

    def rounds(self, n: int, contenders: dict) -> None:
        """n rounds; round r runs the contenders starting with the r-th (rotating order). A contender is a
        function of the round returning {name: seconds}."""
        names = list(contenders)
        for r in range(n):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for k, v in contenders[name](r).items():
                    self.add(k, v)


def main() -> int:
    ensure_peers()
    base = Path(os.environ.get("SDENV_BENCH_DIR") or tempfile.mkdtemp(prefix="sdenv-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    print(
        f"load average at the start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True
    )
    rng = random.Random(6)
    live = base / "webui"
    live.mkdir()
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(base / "restic-cache"))
    env.update(
        BORG_PASSPHRASE="",
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_BASE_DIR=str(base / "borg-home"),
    )
    fig = Figures()
    facts: dict = {}
    STORE_ENV.update(store_env(base / "lib"))
    try:
        t = time.monotonic()
        files = build_env(live, rng)
        print(
            f"environment: {len(files)} small files, {N_DIRS} dirs, {N_LINKS} symlinks, 2 x 1 GiB models "
            f"({du(live) / 1e9:.2f} GB) built in {time.monotonic() - t:.0f} s",
            flush=True,
        )
        subprocess.run(["sync"], check=True)
        walk = f"import os\nfor d, ds, fs in os.walk({str(live)!r}):\n    [os.lstat(os.path.join(d, n)) for n in ds + fs]"

        # -- First snapshot: each round into new repositories; the last round's stay for what follows.
        def fresh(name: str) -> Path:
            path = base / name
            if path.exists():
                shutil.rmtree(path)
            return path

        def first_ours(_r):
            return {"first ours": ours(fresh("store"), "snapshot", str(live))[0]}

        def first_restic(_r):
            run(["restic", "-r", str(fresh("restic")), "init"], env)
            return {"first restic": restic_backup()}

        def first_borg(_r):
            run(["borg", "init", "-e", "none", str(fresh("borg"))], env)
            return {"first borg": borg_create("a")}

        def first_cp(_r):
            plain, synced = run_then_sync(["cp", "-a", str(live), str(fresh("cpa"))])
            return {"first cp -a": plain, "first cp -a + sync": synced}

        def first_rsync(_r):
            plain, synced = run_then_sync(["rsync", "-a", f"{live}/", str(fresh("rsync-0"))])
            return {"first rsync -a": plain, "first rsync -a + sync": synced}

        def restic_backup():
            return run(
                ["restic", "-r", str(base / "restic"), "backup", "-q", "--compression", "off", str(live)], env
            )

        archives = iter(range(1000))

        def borg_create(prefix: str):
            return run(
                [
                    "borg",
                    "create",
                    "--compression",
                    "none",
                    f"{base / 'borg'}::{prefix}{next(archives)}",
                    str(live),
                ],
                env,
            )

        print("first snapshot ...", flush=True)
        fig.rounds(
            ROUNDS,
            {
                "ours": first_ours,
                "restic": first_restic,
                "borg": first_borg,
                "cp": first_cp,
                "rsync": first_rsync,
            },
        )
        shutil.rmtree(base / "cpa")
        time.sleep(RACY_WAIT)

        # -- No-change snapshot
        rsync_dirs = ["rsync-0"]
        rsync_names = iter(range(1, 1000))

        def rsync_link_dest(label: str) -> dict:
            dest = f"rsync-{next(rsync_names)}"
            plain, synced = run_then_sync(
                ["rsync", "-a", f"--link-dest={base / rsync_dirs[-1]}", f"{live}/", str(base / dest)]
            )
            rsync_dirs.append(dest)
            while len(rsync_dirs) > 2:
                shutil.rmtree(base / rsync_dirs.pop(0))
            return {f"{label} rsync --link-dest": plain, f"{label} rsync --link-dest + sync": synced}

        before = du(base / "store")
        _, out = ours(base / "store", "snapshot", str(live))
        manifest = base / "store" / "snapshots" / (out["id"] + ".json")
        facts["nochange added bytes"] = du(base / "store") - before - manifest.stat().st_size
        print("no-change snapshot ...", flush=True)
        fig.rounds(
            QUICK_ROUNDS,
            {
                "ours": lambda r: {"nochange ours": ours(base / "store", "snapshot", str(live))[0]},
                "walk": lambda r: {"nochange python walk": run([sys.executable, "-c", walk])},
                "script": lambda r: {
                    "nochange ours, as a script": ours(base / "store", "snapshot", str(live), as_script=True)[
                        0
                    ]
                },
                "rsync": lambda r: rsync_link_dest("nochange") if r < ROUNDS else {},
                "restic": lambda r: {"nochange restic": restic_backup()} if r < ROUNDS else {},
                "borg": lambda r: {"nochange borg": borg_create("n")} if r < ROUNDS else {},
            },
        )

        # -- Incremental after 1% churn + one model replaced: each round a new churn, every contender
        # recording the same change from the same previous state.
        trees_before = [0]

        def incr_ours(_r):
            seconds, out = ours(base / "store", "snapshot", str(live))
            facts.setdefault("incr read bytes", []).append(out["stats"]["read_bytes"])
            return {"incr ours": seconds}

        print("incremental ...", flush=True)
        for r in range(ROUNDS):
            churn(live, files, rng, f"i{r}", replace_model=True)
            time.sleep(RACY_WAIT)
            trees_before[0] = du(base / "store" / "trees")
            contenders = {
                "ours": incr_ours,
                "rsync": lambda _r: rsync_link_dest("incr"),
                "restic": lambda _r: {"incr restic": restic_backup()},
                "borg": lambda _r: {"incr borg": borg_create("i")},
            }
            names = list(contenders)
            for name in names[r:] + names[:r]:
                for k, v in contenders[name](r).items():
                    fig.add(k, v)
            facts.setdefault("incr tree bytes", []).append(du(base / "store" / "trees") - trees_before[0])
        for d in rsync_dirs:
            shutil.rmtree(base / d)
        listing = [p for p in (base / "store" / "cache").iterdir()]
        facts["listing bytes"] = listing[0].stat().st_size if listing else 0

        # -- Full restore
        def restore_ours(_r):
            seconds, _ = ours(base / "store", "restore", "latest", str(fresh("restored")))
            shutil.rmtree(base / "restored")
            return {"restore ours": seconds}

        def restore_cp(_r):
            plain, synced = run_then_sync(["cp", "-a", str(live), str(fresh("cpa"))])
            shutil.rmtree(base / "cpa")
            return {"restore cp -a": plain, "restore cp -a + sync": synced}

        def restore_restic(_r):
            seconds = run(
                [
                    "restic",
                    "-r",
                    str(base / "restic"),
                    "restore",
                    "-q",
                    "latest",
                    "--target",
                    str(fresh("rr")),
                ],
                env,
            )
            shutil.rmtree(base / "rr")
            return {"restore restic": seconds}

        print("full restore ...", flush=True)
        fig.rounds(ROUNDS, {"ours": restore_ours, "cp": restore_cp, "restic": restore_restic})

        # -- Rollbacks to the newest snapshot: of 1% + a replaced model, then of 1% right after it (its
        # before-rollback snapshot follows a rollback of a model), then a snapshot right after a rollback.
        target = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from snapshot_store.cli import main; sys.exit(main())",
                    str(base / "store"),
                    "list",
                ],
                env=STORE_ENV,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )[-1]["id"]
        print("rollbacks ...", flush=True)
        for r in range(ROUNDS):
            time.sleep(RACY_WAIT)
            churn(live, files, rng, f"m{r}", replace_model=True)
            fig.add("rollback 1%+model ours", ours(base / "store", "rollback", target)[0])
            time.sleep(RACY_WAIT)
            churn(live, files, rng, f"s{r}", replace_model=False)
            fig.add("rollback 1% ours", ours(base / "store", "rollback", target)[0])
            seconds, out = ours(base / "store", "snapshot", str(live))
            fig.add("snapshot after a rollback", seconds)
            facts.setdefault("after rollback read bytes", []).append(out["stats"]["read_bytes"])
            facts.setdefault("after rollback new bytes", []).append(out["stats"]["new_bytes"])
        _, chk = ours(base / "store", "check")
        facts["check"] = chk
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return report(fig, facts, load_start)


def report(fig: Figures, facts: dict, load_start: tuple) -> int:
    def ratio(a: str, b: str) -> float:
        return fig[a] / fig[b]

    tree_share = max(facts["incr tree bytes"]) / facts["listing bytes"] if facts["listing bytes"] else 1.0
    targets = [
        ("first ours / restic", ratio("first ours", "first restic"), 0.5),
        ("first ours / borg", ratio("first ours", "first borg"), None),
        ("first ours / cp -a", ratio("first ours", "first cp -a"), None),
        ("first ours / cp -a + sync", ratio("first ours", "first cp -a + sync"), None),
        ("first ours / rsync -a + sync", ratio("first ours", "first rsync -a + sync"), None),
        ("no-change ours / borg", ratio("nochange ours", "nochange borg"), 0.3),
        ("no-change ours / rsync --link-dest", ratio("nochange ours", "nochange rsync --link-dest"), 0.15),
        ("no-change ours / Python walk", ratio("nochange ours", "nochange python walk"), 2.0),
        ("no-change ours / restic", ratio("nochange ours", "nochange restic"), None),
        ("incremental ours / rsync --link-dest", ratio("incr ours", "incr rsync --link-dest"), 0.6),
        ("incremental ours / restic", ratio("incr ours", "incr restic"), None),
        ("incremental ours / borg", ratio("incr ours", "incr borg"), None),
        ("tree bytes of a 1% change / a listing", tree_share, 0.1),
        ("full restore ours / cp -a + sync", ratio("restore ours", "restore cp -a + sync"), 0.7),
        ("full restore ours / cp -a", ratio("restore ours", "restore cp -a"), None),
        ("full restore ours / restic restore", ratio("restore ours", "restore restic"), None),
        ("rollback 1% / cp -a", ratio("rollback 1% ours", "restore cp -a"), 0.1),
        ("rollback 1% / cp -a + sync", ratio("rollback 1% ours", "restore cp -a + sync"), None),
        ("rollback 1% + model / cp -a + sync", ratio("rollback 1%+model ours", "restore cp -a + sync"), None),
        ("snapshot after a rollback / no-change", ratio("snapshot after a rollback", "nochange ours"), 1.2),
    ]
    print("\nwall seconds, median of the runs (the runs in brackets, in the order they ran):")
    for k, v in fig.runs.items():
        print(f"  {k:36s} {fig[k]:8.3f}   [{' '.join(f'{x:.3f}' for x in v)}]")
    check = facts["check"]
    print(
        f"  {'no-change bytes added':36s} {facts['nochange added bytes']:8d} (beyond the manifest; target <= 1 MB)"
    )
    print(
        f"  {'tree bytes added by each incremental':36s} {facts['incr tree bytes']} (a listing: {facts['listing bytes']})"
    )
    print(
        f"  {'after each rollback, the snapshot read':36s} {facts['after rollback read bytes']} bytes, "
        f"added {facts['after rollback new bytes']} (target: nothing copied)"
    )
    print(
        f"  {'check after all of it':36s} {'clean' if check['ok'] else 'ERRORS'}, garbage {check['garbage']}, "
        f"interrupted runs {check['interrupted_runs']}"
    )
    print("\nratios (target):")
    missed = 0
    for name, value, target in targets:
        verdict = "" if target is None else ("met" if value <= target else "MISSED")
        missed += verdict == "MISSED"
        print(f"  {name:40s} {value:6.3f}  {'' if target is None else f'<= {target}':8s} {verdict}")
    for what, ok in (
        ("a no-change snapshot adds <= 1 MB", facts["nochange added bytes"] <= 1_000_000),
        ("the snapshot after a rollback copies nothing", not any(facts["after rollback read bytes"])),
        ("the store checks clean with no garbage", check["ok"] and not any(check["garbage"].values())),
    ):
        missed += not ok
        print(f"  {what:49s} {'met' if ok else 'MISSED'}")
    load_end = os.getloadavg()
    print(
        f"\nload average: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at the start, "
        f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end; {os.cpu_count()} CPUs"
    )
    print(f"{missed} target(s) missed" if missed else "all targets met")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
