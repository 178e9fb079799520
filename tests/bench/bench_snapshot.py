"""Snapshot store vs cp -a, rsync --link-dest, restic and borg on one synthetic WebUI-like environment.

`make bench` (or `python -m tests.bench snapshot`). Every peer is measured in the same run on the same tree;
the figures printed are wall seconds (one run each; for the no-change snapshot, which takes a tenth of a
second, the median of a few) and the ratios the issue sets targets for.
- The store runs as its own command line, a fresh Python process each time as the peers are fresh processes,
  the way an installed Python program runs: imported, with its bytecode compiled once beforehand, as pip and
  Debian do at install. This machine sets PYTHONDONTWRITEBYTECODE=1, so the bench compiles a copy of the
  store's modules in its own directory. The no-change snapshot is also timed run as a script (compiling its
  ~2,200 lines every time), for reference.
- Every step starts after an untimed `sync`: the peers write gigabytes into the page cache without waiting
  for the disk, and without it the next step (often ours, which fsyncs) would pay for their writeback.

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
QUICK_ROUNDS = 5  # the no-change snapshot of ours and the Python walk: median of this many runs
PEER_ROUNDS = 3  # the no-change rsync, restic and borg runs


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


def timed(argv: list[str], env: dict | None = None, cwd: str | None = None) -> float:
    settle()
    t = time.monotonic()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({p.returncode}): {p.stderr[-800:]}")
    return dt


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


def median(run, rounds: int) -> float:
    return statistics.median(run(i) for i in range(rounds))


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


def main() -> int:
    ensure_peers()
    base = Path(os.environ.get("SDENV_BENCH_DIR") or tempfile.mkdtemp(prefix="sdenv-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(6)
    live = base / "webui"
    live.mkdir()
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(base / "restic-cache"))
    env.update(
        BORG_PASSPHRASE="",
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_BASE_DIR=str(base / "borg-home"),
    )
    res: dict = {}
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
        restic_repo, borg_repo, store = base / "restic", base / "borg", base / "store"
        timed(["restic", "-r", str(restic_repo), "init"], env)
        timed(["borg", "init", "-e", "none", str(borg_repo)], env)
        walk = f"import os\nfor d, ds, fs in os.walk({str(live)!r}):\n    [os.lstat(os.path.join(d, n)) for n in ds + fs]"

        # The peers, called the same way for the first, no-change and incremental rounds.
        def restic_backup():
            return timed(
                ["restic", "-r", str(restic_repo), "backup", "-q", "--compression", "off", str(live)], env
            )

        def borg_create(archive):
            return timed(
                ["borg", "create", "--compression", "none", f"{borg_repo}::{archive}", str(live)], env
            )

        def rsync_link_dest(previous, dest):
            return timed(["rsync", "-a", f"--link-dest={base / previous}", f"{live}/", str(base / dest)])

        # First snapshot
        res["first cp -a"] = timed(["cp", "-a", str(live), str(base / "cpa")])
        res["first restic"] = restic_backup()
        res["first borg"] = borg_create("a")
        res["first rsync --link-dest"] = timed(["rsync", "-a", f"{live}/", str(base / "rs1")])
        res["first ours"], _ = ours(store, "snapshot", str(live))
        time.sleep(2.5)  # past the store's 2 s racy window, as any real second snapshot would be

        # No-change snapshot: a tenth of a second, so the median of a few runs of each (the others: one run)
        before = du(store)
        _, out = ours(store, "snapshot", str(live))
        manifest = store / "snapshots" / (out["id"] + ".json")
        res["nochange added bytes"] = du(store) - before - manifest.stat().st_size
        res["nochange ours"] = median(lambda _: ours(store, "snapshot", str(live))[0], QUICK_ROUNDS)
        res["nochange rsync --link-dest"] = median(lambda i: rsync_link_dest("rs1", f"rs2-{i}"), PEER_ROUNDS)
        res["nochange restic"] = median(lambda _: restic_backup(), PEER_ROUNDS)
        res["nochange borg"] = median(lambda i: borg_create(f"b{i}"), PEER_ROUNDS)
        res["nochange python walk"] = median(lambda _: timed([sys.executable, "-c", walk]), QUICK_ROUNDS)
        res["nochange ours, as a script"] = median(
            lambda _: ours(store, "snapshot", str(live), as_script=True)[0], QUICK_ROUNDS
        )

        # Incremental after 1% churn + one model replaced
        churn(live, files, rng, "a", replace_model=True)
        subprocess.run(["sync"], check=True)
        time.sleep(2.5)
        res["incr ours"], _ = ours(store, "snapshot", str(live))
        res["incr rsync --link-dest"] = rsync_link_dest("rs2-0", "rs3")
        res["incr restic"] = restic_backup()
        res["incr borg"] = borg_create("c")
        for d in ("cpa", "rs1", *(f"rs2-{i}" for i in range(PEER_ROUNDS))):
            shutil.rmtree(base / d)

        # Full restore
        res["restore ours"], _ = ours(store, "restore", "latest", str(base / "restored"))
        res["restore cp -a"] = timed(["cp", "-a", str(live), str(base / "cpa2")])
        res["restore restic"] = timed(
            ["restic", "-r", str(restic_repo), "restore", "-q", "latest", "--target", str(base / "rr")], env
        )
        for d in ("restored", "cpa2", "rr", "rs3"):
            shutil.rmtree(base / d)

        # Rollback of a 1%-changed tree (small files), then 1% + a replaced model
        time.sleep(2.5)
        churn(live, files, rng, "b", replace_model=False)
        res["rollback 1% ours"], rb = ours(store, "rollback", "latest")
        time.sleep(2.5)
        churn(live, files, rng, "c", replace_model=True)
        res["rollback 1%+model ours"], _ = ours(store, "rollback", rb["target"])
        _, chk = ours(store, "check")
        res["check ok"] = chk["ok"]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def ratio(a: str, b: str) -> float:
        return res[a] / res[b]

    targets = [
        ("first ours / restic", ratio("first ours", "first restic"), 1.0),
        ("first ours / borg", ratio("first ours", "first borg"), 1.0),
        ("first ours / cp -a", ratio("first ours", "first cp -a"), 1.0),
        ("first ours / rsync -a", ratio("first ours", "first rsync --link-dest"), 1.0),
        ("no-change ours / borg", ratio("nochange ours", "nochange borg"), 0.3),
        ("no-change ours / rsync --link-dest", ratio("nochange ours", "nochange rsync --link-dest"), 0.15),
        ("no-change ours / Python walk", ratio("nochange ours", "nochange python walk"), 2.0),
        ("no-change ours / restic", ratio("nochange ours", "nochange restic"), None),
        ("incremental ours / rsync --link-dest", ratio("incr ours", "incr rsync --link-dest"), 0.6),
        ("incremental ours / restic", ratio("incr ours", "incr restic"), None),
        ("incremental ours / borg", ratio("incr ours", "incr borg"), None),
        ("full restore ours / cp -a", ratio("restore ours", "restore cp -a"), 1.0),
        ("full restore ours / restic restore", ratio("restore ours", "restore restic"), None),
        ("rollback 1% / full restore", ratio("rollback 1% ours", "restore ours"), 0.1),
        ("rollback 1% + model / full restore", ratio("rollback 1%+model ours", "restore ours"), None),
    ]
    print("\nwall seconds:")
    for k, v in res.items():
        if isinstance(v, float):
            print(f"  {k:32s} {v:8.3f}")
    print(
        f"  {'no-change bytes added':32s} {res['nochange added bytes']:8d} (beyond the manifest; target <= 1 MB)"
    )
    print(f"  {'check after all of it':32s} {'clean' if res['check ok'] else 'ERRORS'}")
    print("\nratios (target):")
    missed = 0
    for name, value, target in targets:
        verdict = "" if target is None else ("met" if value <= target else "MISSED")
        missed += verdict == "MISSED"
        print(f"  {name:40s} {value:6.3f}  {'' if target is None else f'<= {target}':8s} {verdict}")
    if res["nochange added bytes"] > 1_000_000:
        missed += 1
    print(f"\n{missed} target(s) missed" if missed else "\nall targets met")
    return 0 if res["check ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
