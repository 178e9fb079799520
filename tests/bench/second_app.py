"""`make bench BENCH=models`, the second app (issue 22, "Done when"): what ComfyUI beside the WebUI costs.

Two throwaway accounts are provisioned with `make provision` against one fixture host
(tests/fixtures/fixture_host.FixtureHost, ComfyUI's fixture upstream added). Their lock enables the fixture's
two small models and the models bench's 1 GiB checkpoint, which is installed from a bundle directory.
- `webui`: sdenv_apps [webui].
- `both`: [webui] first. The disk its models take is measured, then [webui, comfyui] is provisioned and the
  disk is measured again.
  - The measure is `du` of the store, the WebUI's models folder, ComfyUI's models folder and its
    extra_model_paths.yaml. du counts a hard-linked file once, so a model two apps see is one copy.
  - Target: the second app adds <= 1% of the models' size.
  - Context: du of the store and both whole trees, and of ComfyUI's tree alone (its code and venv, which
    are the app itself, not the models).
- A no-change `make provision` of each account, ROUNDS rounds in rotating order (bench_snapshot.Figures),
  medians. Target: both apps <= 1.2x the WebUI alone.
  - Each timed run's PLAY RECAP must say changed=0; otherwise the bench stops, because it would not be
    measuring a no-change run.
The accounts are removed with make remove-dummy (userdel if that fails), and the fixture's root is deleted,
pass or fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench_snapshot import Figures

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "tests" / "fixtures", ROOT / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ROUNDS = int(os.environ.get("SDENV_BENCH_ROUNDS") or 5)
DISK_TARGET = 0.01  # of the models' size
RERUN_TARGET = 1.2  # x the WebUI alone
BIG_MODEL = "sdtbig"


# --- pure parts (unit-tested in tests/unit/test_bench_second_app.py) ------------------------------------


def disk_used(paths) -> int:
    """Bytes on disk (allocated blocks) of the paths that exist, as GNU du counts them: a file hard-linked
    under two of the paths is counted once."""
    present = [str(p) for p in paths if os.path.lexists(p)]
    if not present:
        return 0
    done = subprocess.run(
        ["du", "-s", "-c", "-B1", "--", *present], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1].split()[0])


def model_paths(home: Path, with_comfyui: bool) -> list[Path]:
    """Where the models are on disk for the apps of one account: the store, the WebUI's models folder, and
    with ComfyUI its models folder and the yaml that points it at the store."""
    paths = [home / "sd-models", home / "stable-diffusion-webui" / "models"]
    if with_comfyui:
        paths += [home / "ComfyUI" / "models", home / "ComfyUI" / "extra_model_paths.yaml"]
    return paths


def rows(figures: dict) -> list[tuple[str, str, str, str, str, bool]]:
    """The bench's two rows in bench_models' shape: (what, ours, peer, ratio, target, met)."""
    added = figures["after"] - figures["before"]
    share = added / figures["models"]
    rerun = figures["both"] / figures["webui"]
    return [
        (
            "second app: disk ComfyUI adds for the models",
            f"models on disk {figures['before'] / 2**20:.1f} MiB with the WebUI alone, "
            f"{figures['after'] / 2**20:.1f} MiB with both apps ({added / 1024:+.0f} KiB); "
            f"context: store + both trees {figures['trees_before'] / 2**20:.1f} -> "
            f"{figures['trees_after'] / 2**20:.1f} MiB (a file uv hard-linked into both venvs counted once); "
            f"ComfyUI's tree counted alone (code, venv: the app, not the models) "
            f"{figures['comfyui_tree'] / 2**20:.1f} MiB",
            f"the models' size {figures['models'] / 2**20:.1f} MiB (one copy, in the store)",
            f"{share:+.4%} of the models' size",
            f"<= {DISK_TARGET:.0%}",
            share <= DISK_TARGET,
        ),
        (
            "second app: no-change make provision",
            f"both apps {figures['both']:.2f} s",
            f"the WebUI alone {figures['webui']:.2f} s",
            f"{rerun:.2f}x the WebUI alone",
            f"<= {RERUN_TARGET}x",
            rerun <= RERUN_TARGET,
        ),
    ]


# --- the run ----------------------------------------------------------------------------------------------


def recap_changed(output: str) -> int | None:
    from tests.bench.bench_everyday import recap_changed as parse

    return parse(output)


def bench_second_app(base: str, model: Path, sha: str) -> dict:
    """Provision the two accounts, measure; the figures rows() reads. base: where the fixture's root goes;
    model: a valid safetensors checkpoint (its sha256 sha) the accounts install from a bundle directory."""
    from comfyui_fixtures import add_comfyui_upstream
    from fixture_host import FixtureHost, account_vars, free_port, write_inventory
    from sdenv_testlib import remove_user, run_make, user_exists
    from webui_fixtures import serve_http

    # Beside the models bench's own directory, which is 0700: the dummies read the fixture's wheelhouse here.
    root = Path(tempfile.mkdtemp(prefix="sdt-second-app-", dir=base))
    os.chmod(root, 0o755)  # noqa: S103
    accounts: dict[str, dict] = {}
    try:
        host = FixtureHost(root)
        add_comfyui_upstream(host.upstream)  # before host_vars builds the index, which then serves its wheels
        big = host.bundle / f"{BIG_MODEL}.safetensors"
        shutil.copyfile(model, big)
        os.chmod(big, 0o644)
        with serve_http(host.served) as server:
            shared = host.host_vars(server.url)
            shared["sdenv_lock"]["models"].append(
                {"name": BIG_MODEL, "kind": "checkpoint", "file": big.name, "sha256": sha,
                 "size": big.stat().st_size, "urls": [], "trigger_words": []}
            )  # fmt: skip
            shared["sdenv_models_enabled"] = [*shared["sdenv_models_enabled"], BIG_MODEL]
            models_size = sum(m["size"] for m in shared["sdenv_lock"]["models"])
            for name in ("webui", "both"):
                user = "sdt" + secrets.token_hex(4)
                assert not user_exists(user), user
                variables = {
                    **shared,
                    **account_vars(user, root / f"work-{name}"),
                    "sdenv_webui_port": free_port(),
                    "sdenv_comfyui_port": free_port(),
                    # Each dummy its own uv cache: the fixture's default is one directory for one account.
                    "sdenv_webui_uv_cache_dir": str(root / f"uv-cache-{name}"),
                    "sdenv_apps": ["webui"],
                }
                accounts[name] = {"user": user, "vars": variables, "dir": root / f"inventory-{name}"}

            def provision(name: str, apps: list[str]) -> tuple[float, int | None]:
                account = accounts[name]
                inventory = write_inventory(account["dir"], {**account["vars"], "sdenv_apps": apps})
                account["inventory"] = inventory
                subprocess.run(["sync"], check=True)
                started = time.monotonic()
                result = run_make("provision", inventory)
                seconds = time.monotonic() - started
                account["provisioned"] = True
                if result.returncode != 0:
                    raise RuntimeError(f"make provision ({name}, {apps}) failed: {result.output[-3000:]}")
                return seconds, recap_changed(result.output)

            t = time.monotonic()
            provision("webui", ["webui"])
            provision("both", ["webui"])
            home = Path(f"/home/{accounts['both']['user']}")
            trees = [home / "sd-models", home / "stable-diffusion-webui", home / "ComfyUI"]
            before = disk_used(model_paths(home, with_comfyui=True))  # ComfyUI's paths are not there yet
            trees_before = disk_used(trees)
            provision("both", ["webui", "comfyui"])
            after = disk_used(model_paths(home, with_comfyui=True))
            trees_after = disk_used(trees)
            comfyui_tree = disk_used([home / "ComfyUI"])
            print(
                f"provisioned both accounts in {time.monotonic() - t:.0f} s; {ROUNDS} rounds ...", flush=True
            )

            fig = Figures()
            apps = {"webui": ["webui"], "both": ["webui", "comfyui"]}

            def rerun(name: str):
                seconds, changed = provision(name, apps[name])
                if changed != 0:
                    raise RuntimeError(f"the re-run of {name} changed {changed} things: not a no-change run")
                return {name: seconds}

            fig.rounds(ROUNDS, {name: (lambda r, n=name: rerun(n)) for name in apps})
            for name, values in fig.runs.items():
                print(
                    f"  no-change provision, {name:5s}: [{' '.join(f'{v:.2f}' for v in values)}] s",
                    flush=True,
                )
            return {
                "before": before,
                "after": after,
                "trees_before": trees_before,
                "trees_after": trees_after,
                "comfyui_tree": comfyui_tree,
                "models": models_size,
                "webui": fig["webui"],
                "both": fig["both"],
            }
    finally:
        for account in accounts.values():
            if account.get("provisioned"):
                removed = run_make("remove-dummy", account["inventory"], CONFIRM="yes")
                if removed.returncode != 0:
                    print(
                        f"make remove-dummy failed for {account['user']}: {removed.output[-1500:]}",
                        flush=True,
                    )
            remove_user(account["user"])
        subprocess.run(["rm", "-rf", str(root)], check=False)
