#!/usr/bin/env python3
"""Run the toolkit against the REAL WebUI code from local git mirrors (a manual check, not part of make test).

The integration tests use an upstream-shaped fixture; this puts the real v1.10.1 tree and its pinned
sub-repositories behind a local HTTP server instead, so `make provision`, `make verify LIVE=1 OFFLINE=1`
and `make run` meet the real launcher, server and extensions. Nothing it makes belongs in a commit.

    python3 tests/manual/real_upstream_run.py mirrors OUT NAME=BARE_GIT_DIR ...   # what to serve, from mirrors
    python3 tests/manual/real_upstream_run.py serve OUT                           # foreground; prints its URL
    python3 tests/manual/real_upstream_run.py inventory OUT URL USER MODELS_DIR   # OUT/inventory/hosts.yml

NAME is the repository's name in the lock (stable-diffusion-webui, stable-diffusion-stability-ai,
generative-models, k-diffusion, BLIP, stable-diffusion-webui-assets, CLIP, open_clip, ComfyUI); BARE_GIT_DIR a
bare mirror holding the lock's commit. When ComfyUI is among them, the inventory also chooses
`sdenv_apps: [webui, comfyui]` (the preflight wants webui in it) and a free port for ComfyUI, so the same
provision and `make verify LIVE=1 OFFLINE=1` run the real ComfyUI beside the real WebUI. Mirrors made from snapshots can lack objects (large images are left out):
- history incomplete, pinned tree complete: served shallow (depth 1) at the pin, over git's smart protocol
  (a full clone of a shallow repository is possible only that way);
- pinned tree incomplete: served as a stand-in root commit with the same tree but a one-line placeholder for
  each absent blob; the inventory pins the stand-in's commit (printed, and kept in OUT/stand-ins.json).
CLIP and open_clip are served as GitHub-style archives (`git archive --prefix=<name>-<commit>/`).

Models: tests/manual/real_upstream_models.py makes an SD 1.5-shaped checkpoint and a kohya-style LoRA with random
weights. `inventory` pins whatever *.safetensors MODELS_DIR holds (sha256, size); the first checkpoint-sized
file (> 1 GB) is the checkpoint, the rest are LoRAs. Run make as root with INVENTORY=OUT/inventory/hosts.yml.
To time the everyday targets on this real tree, real_upstream_standin_models.py makes models of the same sizes
without torch (not loadable by the WebUI), and `SDENV_BENCH_INVENTORY=OUT/inventory/hosts.yml make bench
BENCH=everyday` measures the provisioned account (left in place; remove it with make remove-dummy).
"""

import http.server
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The toolkit's own streaming hash (module_utils are plain modules once on the path).
sys.path[:0] = [str(ROOT / "plugins" / "module_utils"), str(ROOT / "roles" / "webui" / "module_utils")]
from webui_files import sha256_file  # noqa: E402

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args, cwd=None, text=True, data=None):
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=text, input=data, check=True
    ).stdout


def lock():
    import yaml

    with open(ROOT / "inventory/group_vars/all/lock.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sdenv_lock"]


def pins():
    """{name: commit} for every git object the lock pins."""
    data = lock()
    found = {"stable-diffusion-webui": data["webui"]["commit"], "ComfyUI": data["comfyui"]["commit"]}
    found.update({r["dir"]: r["commit"] for r in data["repositories"]})
    for name in ("clip", "open_clip"):
        found["CLIP" if name == "clip" else name] = data["webui_venv"][name]["file"].rsplit("-", 1)[1][:-4]
    return found


def missing(mirror, commit, history):
    listing = git(
        "rev-list", "--objects", "--missing=print", *([] if history else ["--no-walk"]), commit, cwd=mirror
    )
    return {line[1:] for line in listing.splitlines() if line.startswith("?")}


def stand_in(mirror, commit, served, absent):
    """A root commit with commit's tree, each absent blob replaced by a placeholder; returns its id."""
    work = served.with_suffix(".work")
    git("init", "-q", "--bare", str(work))
    (work / "objects/info/alternates").write_text(str(Path(mirror, "objects")) + "\n")
    index = {**GIT_ENV, "GIT_INDEX_FILE": str(work / "index")}
    lines = []
    for entry in git("ls-tree", "-r", "--full-tree", commit, cwd=mirror).splitlines():
        meta, path = entry.split("\t", 1)
        mode, _, sha = meta.split()
        if sha in absent:
            note = f"placeholder: blob {sha} ({path}) at {commit} is absent from the local mirror\n"
            sha = git("hash-object", "-w", "--stdin", cwd=work, data=note).strip()
        lines.append(f"{mode} {sha}\t{path}")
    subprocess.run(["git", "update-index", "--index-info"], cwd=work, env=index, input="\n".join(lines) + "\n",
                   text=True, check=True)  # fmt: skip
    tree = subprocess.run(["git", "write-tree"], cwd=work, env=index, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    author = git("log", "-1", "--format=%an%n%ae%n%aD%n%B", commit, cwd=mirror).split("\n", 3)
    env = {**GIT_ENV, "GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": author[2],
           "GIT_COMMITTER_NAME": "sdenv", "GIT_COMMITTER_EMAIL": "sdenv@invalid"}  # fmt: skip
    message = (
        f"{author[3].strip()}\n\nstand-in for {commit}: its tree but for blobs absent from the local mirror\n"
    )
    new = subprocess.run(["git", "commit-tree", tree, "-m", message], cwd=work, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    git("init", "-q", "--bare", str(served))
    git("push", "-q", str(served), f"{new}:refs/heads/main", cwd=work)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=served)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return new


def mirrors(out, specs):
    out = Path(out)
    (out / "srv/git").mkdir(parents=True, exist_ok=True)
    (out / "srv/archives").mkdir(exist_ok=True)
    wanted, stand_ins = pins(), {}
    for spec in specs:
        name, _, mirror = spec.partition("=")
        commit = wanted[name]
        if name in ("CLIP", "open_clip"):
            archive = out / "srv/archives" / f"{name}-{commit}.zip"
            git(
                "archive",
                "--format=zip",
                f"--prefix={name}-{commit}/",
                "-o",
                str(archive),
                commit,
                cwd=mirror,
            )
            print(f"{name}: archive {archive.name}")
            continue
        served = out / "srv/git" / f"{name}.git"
        in_tree = missing(mirror, commit, history=False)
        if in_tree:
            stand_ins[name] = stand_in(mirror, commit, served, in_tree)
            print(
                f"{name}: {len(in_tree)} blobs of the pinned tree absent: stand-in {stand_ins[name]} for {commit}"
            )
        elif missing(mirror, commit, history=True):
            git("init", "-q", "--bare", str(served))
            git("fetch", "-q", "--depth", "1", mirror, f"+{commit}:refs/heads/main", cwd=served)
            git("symbolic-ref", "HEAD", "refs/heads/main", cwd=served)
            tags = git("tag", "--points-at", commit, cwd=mirror).split()
            for tag in tags:
                git("fetch", "-q", "--depth", "1", mirror, f"+refs/tags/{tag}:refs/tags/{tag}", cwd=served)
            print(f"{name}: history incomplete in the mirror: served shallow at {commit} {' '.join(tags)}")
        else:
            git("clone", "-q", "--bare", mirror, str(served))
            print(f"{name}: complete, served as a bare clone")
    (out / "stand-ins.json").write_text(json.dumps(stand_ins, indent=1) + "\n")
    subprocess.run(["chmod", "-R", "a+rX", str(out)], check=True)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, and /git/* through `git http-backend` (smart HTTP)."""

    def log_message(self, fmt, *args):
        pass

    def git_backend(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": "/usr/bin:/bin", "GIT_PROJECT_ROOT": self.directory, "GIT_HTTP_EXPORT_ALL": "1",
               "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "REQUEST_METHOD": self.command,
               "PATH_INFO": path, "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}  # fmt: skip
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        return self.git_backend() if self.path.startswith("/git/") else super().do_GET()

    def do_POST(self):
        return self.git_backend() if self.path.startswith("/git/") else self.send_error(405)


def serve(out):
    directory = str(Path(out, "srv").resolve())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=directory))
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def free_ports(count):
    """count distinct loopback ports free now (all sockets held open until every one is bound)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def inventory(out, url, user, models_dir):
    import yaml

    out, data = Path(out).resolve(), lock()
    stand_ins = json.loads((out / "stand-ins.json").read_text())
    data["webui"]["repo"] = f"{url}/git/stable-diffusion-webui.git"
    for repo in data["repositories"]:
        repo["repo"] = f"{url}/git/{repo['dir']}.git"
        repo["commit"] = stand_ins.get(repo["dir"], repo["commit"])
    for name in ("clip", "open_clip"):
        data["webui_venv"][name]["url"] = f"{url}/archives/{data['webui_venv'][name]['file']}"
    comfyui = (out / "srv/git/ComfyUI.git").is_dir()
    if comfyui:
        data["comfyui"]["repo"] = f"{url}/git/ComfyUI.git"
        data["comfyui"]["commit"] = stand_ins.get("ComfyUI", data["comfyui"]["commit"])
    data["models"] = []
    for path in sorted(Path(models_dir).glob("*.safetensors"), key=lambda p: -p.stat().st_size):
        kind = "checkpoint" if not data["models"] and path.stat().st_size > 1 << 30 else "lora"
        data["models"].append({
            "name": path.stem, "kind": kind, "file": path.name, "urls": [], "sha256": sha256_file(path),
            "size": path.stat().st_size, "source": "generated locally (random weights)",
            "trigger_words": [] if kind == "checkpoint" else ["glasses"], "token_env": None,
        })  # fmt: skip
    port, comfyui_port = free_ports(2)
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "sdenv_user_name": user, "sdenv_state_dir": str(out / "state"),
            "sdenv_snapshot_store": str(out / "snapshots"), "sdenv_webui_port": port,
            "sdenv_models_enabled": [m["name"] for m in data["models"]],
            "sdenv_models_bundle_dirs": [str(Path(models_dir).resolve())], "sdenv_lock": data}  # fmt: skip
    if comfyui:
        host.update({"sdenv_apps": ["webui", "comfyui"], "sdenv_comfyui_port": comfyui_port})
    (out / "inventory").mkdir(exist_ok=True)
    link = out / "inventory/group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventory/group_vars")  # Ansible reads group_vars next to the inventory
    path = out / "inventory/hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}, sort_keys=False, width=200))
    print(path)


def main(argv):
    if len(argv) >= 3 and argv[1] == "mirrors":
        return mirrors(argv[2], argv[3:])
    if len(argv) == 3 and argv[1] == "serve":
        return serve(argv[2])
    if len(argv) == 6 and argv[1] == "inventory":
        return inventory(*argv[2:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
