"""The WebUI venv built by uv (as provision does) vs pip, from the same lock and the same local index.

`make bench BENCH=venv BUNDLE=dir` (or SDENV_BUNDLE=dir python -m tests.bench venv): a bundle made by
`make bundle` for this machine's platform gives the lock (`locks/<platform>-py<X.Y>.txt` for this Python) and
the wheelhouse, served over loopback by Python's http.server as a find-links page, so the network is not
measured. Each installer builds a fresh venv from it, twice:
- cold: an empty cache (a first provision);
- warm: the cache the cold run filled (what reset-dummy then provision costs: the toolkit keeps uv's cache
  outside the dummy's home).
uv: `uv pip sync --require-hashes` of the lock, then CLIP's archive (--no-deps --no-build-isolation), the
provision's own steps (webui_venv_plan.build_steps). pip: `pip install --require-hashes --no-deps -r` of the
same lock, then the same archive. Targets: cold <= 0.5x pip; warm <= 0.1x pip and under 20 s.
SDENV_BENCH_DIR picks the work directory (default: a new one under /var/tmp, on the bundle's filesystem is
not needed); removed at the end.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in [ROOT / "plugins" / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]:
    sys.path.insert(0, str(path))

import bundle_build  # noqa: E402
import webui_venv_plan as plan  # noqa: E402
from venv_lock import lock_file_name  # noqa: E402

TARGETS = {"cold": 0.5, "warm": 0.1}
WARM_LIMIT = 20.0


def serve(directory):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *_: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def timed(argv, env):
    started = time.monotonic()
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {(completed.stderr or completed.stdout)[-800:]}")
    return time.monotonic() - started


def uv_build(work, venv, lock, clip, url, cache):
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1"}
    uv = bundle_build.uv_command()
    steps = plan.build_steps(sys.executable, str(venv), str(work), uv, str(lock), str(clip),
                             ["--no-index", "--find-links", url])  # fmt: skip
    subprocess.run(steps[0][1], check=True)  # the venv itself is not what is compared
    return sum(timed(argv, env) for _, argv, _ in steps[1:])


def pip_build(venv, lock, clip, url, cache):
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        **os.environ,
        "PIP_CACHE_DIR": str(cache),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CONFIG_FILE": os.devnull,
    }
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", url]
    seconds = timed([*pip, "--require-hashes", "--no-deps", "-r", str(lock)], env)
    return seconds + timed([*pip, "--no-deps", "--no-build-isolation", str(clip)], env)


def main():
    bundle = Path(os.environ.get("SDENV_BUNDLE") or "")
    if not bundle.name or not (bundle / "manifest.json").is_file():
        print(
            "make bench BENCH=venv needs BUNDLE=<a bundle made by make bundle for this machine's platform>."
        )
        return 1
    manifest = json.loads((bundle / "manifest.json").read_text())
    python = "%d.%d" % sys.version_info[:2]
    lock_name = lock_file_name(manifest["platform"], python)
    source = bundle / "locks" / lock_name
    if not source.is_file():
        print(f"The bundle has no {lock_name}: make it for this platform and Python {python}.")
        return 1
    work = Path(
        os.environ.get("SDENV_BENCH_DIR") or tempfile.mkdtemp(prefix="sdenv-bench-venv-", dir="/var/tmp")
    )
    work.mkdir(parents=True, exist_ok=True)
    server, url = serve(bundle / "wheelhouse")
    try:
        lock = work / lock_name
        extra = {}
        for row in manifest.get("built", []):
            extra.setdefault(row["package"], []).append(row["wheel_sha256"])
        lock.write_text(plan.effective_lock(source.read_text(), extra))
        clip = next((bundle / "archives").glob("CLIP-*.zip"))
        print(f"lock {lock_name} ({sum(1 for line in lock.read_text().splitlines() if '==' in line)} packages), "
              f"wheelhouse {bundle / 'wheelhouse'} over {url}, Python {sys.version.split()[0]}, "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        results = {}
        for tool in ("uv", "pip"):
            cache = work / f"{tool}-cache"
            for kind in ("cold", "warm"):
                venv = work / f"venv-{tool}-{kind}"
                subprocess.run(["sync"], check=False)
                if tool == "uv":
                    results[tool, kind] = uv_build(work, venv, lock, clip, url, cache)
                else:
                    results[tool, kind] = pip_build(venv, lock, clip, url, cache)
                print(f"  {tool:3} {kind}: {results[tool, kind]:7.1f} s", flush=True)
                shutil.rmtree(venv)
        failed = 0
        for kind, limit in TARGETS.items():
            ratio = results["uv", kind] / results["pip", kind]
            ok = ratio <= limit and (kind == "cold" or results["uv", kind] < WARM_LIMIT)
            failed += not ok
            extra_target = f" and < {WARM_LIMIT:.0f} s" if kind == "warm" else ""
            print(f"{kind}: uv {results['uv', kind]:.1f} s vs pip {results['pip', kind]:.1f} s = {ratio:.3f}x "
                  f"(target <= {limit}x{extra_target}) {'met' if ok else 'MISSED'}")  # fmt: skip
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return 1 if failed else 0
    finally:
        server.shutdown()
        if not os.environ.get("SDENV_BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)
