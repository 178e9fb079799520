"""Reachability before change (plugins/module_utils/sdenv_reach.py, sdenv_http.py): which sources a run
needs, what the host has already, the probes against real local servers and repositories, the sentences,
and the proxy/CA variables every host task gets."""

import http.server
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import sdenv_http
import sdenv_reach as reach
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "a" * 40


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


SEEN = []  # (method, request target, Authorization) of every request the recorder got


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /gone 404, /token 401, /nohead 501 to HEAD; records request lines."""

    def log_message(self, *args):
        pass

    def answer(self, with_body):
        SEEN.append((self.command, self.path, self.headers.get("Authorization")))
        path = self.path.rsplit("/", 1)[-1] if self.path.startswith("http") else self.path.lstrip("/")
        if path == "nohead" and self.command == "HEAD":
            self.send_error(501)
            return
        code = {"ok": 200, "gone": 404, "token": 401, "nohead": 206}.get(path, 200)
        self.send_response(code)
        self.send_header("Content-Length", "1" if with_body else "0")
        self.end_headers()
        if with_body:
            self.wfile.write(b"x")

    def do_HEAD(self):
        self.answer(False)

    def do_GET(self):
        self.answer(True)


@pytest.fixture
def server():
    SEEN.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- Probes against real local servers -------------------------------------------------------------------


def test_http_probe_answers_and_refuses_with_head_only(server):
    assert reach.probe_http(f"{server}/ok", {}) is None
    assert reach.probe_http(f"{server}/token", {}) is None  # a download that needs a token still answers
    assert reach.probe_http(f"{server}/nohead", {}) is None  # a server that does GET only answers too
    assert [method for method, _, _ in SEEN] == ["HEAD"] * 3  # HEAD only: no content moves
    assert reach.probe_http(f"{server}/gone", {}) == ("unreachable", "HTTP 404")
    kind, reason = reach.probe_http(f"http://127.0.0.1:{closed_port()}/x", {})
    assert kind == "unreachable" and "refused" in reason.lower(), reason
    assert all(auth is None for _, _, auth in SEEN)  # never a token


def test_a_url_that_is_not_http_is_unreachable_not_a_crash():
    # The preflight probes in its one module run before the value checks report such a URL (issue 21).
    assert reach.probe_http("ftp://civitai.com/x", {}) == (
        "unreachable",
        "ftp://civitai.com/x is not an http(s) URL",
    )


def test_http_probe_goes_through_the_proxy_the_environment_names(server):
    # The "proxy" is the recorder: a plain-HTTP request through a proxy carries the absolute URL.
    environ = {"http_proxy": server, "NO_PROXY": "localhost"}
    assert reach.probe_http("http://models.example.invalid/file", environ) is None
    assert SEEN[-1][:2] == ("HEAD", "http://models.example.invalid/file")
    # NO_PROXY names the host: straight there (and nothing answers there).
    assert sdenv_http.proxy_for("http://a.internal.example/x", {"no_proxy": ".internal.example"}) is None
    assert sdenv_http.proxy_for("https://x.example/", {"HTTPS_PROXY": "http://p:3128"}) == "http://p:3128"
    assert sdenv_http.proxy_for("http://x.example/", {"HTTPS_PROXY": "http://p:3128"}) is None


def test_model_downloads_use_the_same_proxy_aware_connection(server):
    import model_download

    conn, target = model_download._connect("http://models.example.invalid/m", 5)
    assert target == "/m"  # no proxy in this process's environment: straight to the host
    conn.close()
    os.environ["http_proxy"] = server
    try:
        conn, response, final = model_download.open_http("http://models.example.invalid/ok", {}, None, 5)
        assert response.status == 200 and final == "http://models.example.invalid/ok"
        conn.close()
    finally:
        del os.environ["http_proxy"]
    assert SEEN[-1][:2] == ("GET", "http://models.example.invalid/ok")


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def bare_repo(tmp_path):
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    for message in ("first", "second"):
        git(
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
            cwd=work,
        )
    first = git("rev-parse", "HEAD~1", cwd=work)
    tip = git("rev-parse", "HEAD", cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    return f"file://{bare}", first, tip, work


def test_git_probe_proves_the_pinned_commit(bare_repo, tmp_path):
    url, first, tip, _work = bare_repo
    assert reach.probe_git(url, tip, dict(os.environ)) is None  # a ref's tip: ls-remote is the proof
    assert reach.probe_git(url, first, dict(os.environ)) is None  # not a tip: fetched by id, commit only
    kind, reason = reach.probe_git(url, "0" * 40, dict(os.environ))
    assert kind == "commit" and "not our ref" in reason, reason
    kind, reason = reach.probe_git(f"http://127.0.0.1:{closed_port()}/x.git", tip, dict(os.environ))
    assert kind == "unreachable" and "127.0.0.1" in reason, reason


# --- What the run needs, and what the host has already ---------------------------------------------------


def lock():
    return yaml.safe_load((ROOT / "inventory/group_vars/all/lock.yml").read_text())["sdenv_lock"]


def values(**changes):
    base = {
        "sdenv_lock": lock(), "sdenv_webui_dir": "/home/d/sd", "sdenv_webui_venv_bootstrap": True,
        "sdenv_webui_wheelhouse": "", "sdenv_webui_pip_index_url": "", "sdenv_webui_archive_dir": "/home/d/a",
        "sdenv_webui_venv_dir": "/home/d/sd/venv", "sdenv_bundle": "",
        "sdenv_models_enabled": ["beautifulRealistic_v7", "glasses-2"],
        "sdenv_models_kind_dirs": {"checkpoint": "/home/d/sd/models/Stable-diffusion", "lora": "/home/d/sd/models/Lora"},
        "sdenv_models_stat_cache": "/var/lib/sdenv/models/stat-cache.json",
        "sdenv_models_bundle_dirs": ["/var/lib/sdenv/model-bundle"],
    }  # fmt: skip
    return {**base, **changes}


def test_the_sources_a_provision_needs():
    found = reach.needed_sources(values(), ["webui", "models"], pending_names=["glasses-2"])
    what = [source["what"] for source in found]
    assert what == [
        "the WebUI repository (sdenv_lock.webui.repo)",
        "the sub-repository stable-diffusion-webui-assets (sdenv_lock.repositories[0])",
        "the sub-repository stable-diffusion-stability-ai (sdenv_lock.repositories[1])",
        "the sub-repository generative-models (sdenv_lock.repositories[2])",
        "the sub-repository k-diffusion (sdenv_lock.repositories[3])",
        "the sub-repository BLIP (sdenv_lock.repositories[4])",
        "the CLIP archive (sdenv_lock.webui_venv.clip.url)",
        "the package index (sdenv_webui_pip_index_url)",
        "the model beautifulRealistic_v7 (sdenv_lock.models[0].urls)",
    ]  # the pending LoRA is never fetched, so never probed
    assert found[0]["tree"] == "/home/d/sd" and found[7]["url"] == "https://pypi.org/simple/"
    # A bundle is checked instead; a wheelhouse replaces index and archive; tags narrow the entry points.
    assert reach.needed_sources(values(sdenv_bundle="/b"), ["webui", "models"]) == []
    kinds = [s["kind"] for s in reach.needed_sources(values(sdenv_webui_wheelhouse="/w"), ["webui"])]
    assert kinds == ["git"] * 6
    assert [s["kind"] for s in reach.needed_sources(values(), ["dummy_user", "models"])] == ["http"]


def test_comfyui_and_the_mac_apps_are_probed_only_when_sdenv_apps_names_them():
    both = values(sdenv_apps=["webui", "comfyui", "diffusionbee"], sdenv_comfyui_dir="/home/d/ComfyUI",
                  sdenv_user_home="/home/d", sdenv_mac_apps_dir="/home/d/Applications")  # fmt: skip
    found = reach.needed_sources(both, ["webui", "comfyui", "mac_apps"])
    comfyui = [s for s in found if s["what"] == "the ComfyUI repository (sdenv_lock.comfyui.repo)"]
    assert comfyui == [
        {"kind": "git", "what": "the ComfyUI repository (sdenv_lock.comfyui.repo)", "url": lock()["comfyui"]["repo"],
         "commit": lock()["comfyui"]["commit"], "tree": "/home/d/ComfyUI"}
    ]  # fmt: skip
    (bee,) = [s for s in found if "diffusionbee" in s["what"]]
    assert bee["urls_by_machine"] == {
        arch: d["url"] for arch, d in lock()["mac_apps"]["diffusionbee"]["downloads"].items()
    }
    assert bee["app"] == {"path": "/home/d/Applications/DiffusionBee.app", "bundle_id": "com.diffusionbee.diffusionbee",
                          "version": "2.5.3"}  # fmt: skip
    # The default apps, or role comfyui left out by --tags: nothing of either is probed.
    alone = reach.needed_sources(values(sdenv_apps=["webui"]), ["webui", "comfyui", "mac_apps"])
    assert not [s for s in alone if "ComfyUI" in s["what"] or "disk image" in s["what"]]
    assert reach.needed_sources(both, ["webui", "mac_apps"]) == [s for s in found if s is not comfyui[0]]
    assert reach.needed_sources({**both, "sdenv_bundle": "/b"}, ["comfyui", "mac_apps"]) == []


def test_a_comfyui_commit_the_mirror_lacks_is_one_sentence(bare_repo):
    url, _first, _tip, _work = bare_repo
    lacking = {**lock()["comfyui"], "repo": url, "commit": "0" * 40}
    found = reach.needed_sources(
        values(
            sdenv_lock={**lock(), "comfyui": lacking}, sdenv_apps=["webui", "comfyui"], sdenv_comfyui_dir=""
        ),
        ["comfyui"],
    )
    (sentence,) = reach.unreachable_sentences(found, dict(os.environ))
    assert sentence.startswith(
        f"the ComfyUI repository (sdenv_lock.comfyui.repo) at {url} answers but does not serve the pinned"
        f" commit {'0' * 40} ("
    ), sentence
    assert sentence.endswith(
        "point lock.yml at a repository that has it (a mirror or fork), or give BUNDLE=dir."
    )


# macOS paths, unit-tested only: the uname values a Mac reports (`uname -sm`: "Darwin arm64" on Apple
# Silicon, "Darwin x86_64" on Intel), never run on a Mac here.
@pytest.mark.parametrize(
    ("sysname", "machine", "expected"),
    [("Darwin", "arm64", "arm64"), ("Darwin", "x86_64", "x86_64"), ("Linux", "x86_64", None)],
)
def test_a_mac_apps_disk_image_is_probed_for_the_hosts_own_architecture(
    monkeypatch, sysname, machine, expected
):
    monkeypatch.setattr(reach, "_uname", lambda: os.uname_result((sysname, "mac", "23.0", "v", machine)))
    entry = lock()["mac_apps"]["diffusionbee"]
    source = reach.needed_sources(
        values(sdenv_apps=["diffusionbee"], sdenv_user_home="/nonexistent-sdt", sdenv_mac_apps_dir=""),
        ["mac_apps"],
    )[0]
    probed = []

    def probe_http(url, environ):
        probed.append(url)
        return ("unreachable", "HTTP 404")

    sentences = reach.unreachable_sentences([source], {}, probe_http=probe_http)
    if expected is None:
        assert probed == [] and sentences == []  # off macOS the platform rule says it, once
        return
    url = entry["downloads"][expected]["url"]
    assert probed == [url]
    assert sentences == [
        f"the diffusionbee disk image (sdenv_lock.mac_apps.diffusionbee.downloads) at {url} cannot be reached"
        " from this host (HTTP 404): put a reachable mirror URL in lock.yml, give an offline bundle with"
        " BUNDLE=dir, or set HTTPS_PROXY (and sdenv_ca_bundle for a proxy with its own CA) as README's \"Behind"
        ' a proxy" says.'
    ]
    # Mochi Diffusion ships arm64 only: an Intel Mac has no URL to probe (its architecture rule refuses it).
    mochi = reach.needed_sources(values(sdenv_apps=["mochi-diffusion"]), ["mac_apps"])[0]
    probed.clear()
    reach.unreachable_sentences([mochi], {}, probe_http=probe_http)
    assert probed == (
        [lock()["mac_apps"]["mochi-diffusion"]["downloads"]["arm64"]["url"]] if expected == "arm64" else []
    )


def test_a_mac_app_at_its_pin_is_not_probed(monkeypatch, tmp_path):
    import plistlib

    monkeypatch.setattr(reach, "_uname", lambda: os.uname_result(("Darwin", "mac", "23.0", "v", "arm64")))
    app = tmp_path / "Applications" / "DiffusionBee.app" / "Contents"
    app.mkdir(parents=True)
    info = {"CFBundleIdentifier": "com.diffusionbee.diffusionbee", "CFBundleShortVersionString": "2.5.3"}
    (app / "Info.plist").write_bytes(plistlib.dumps(info, fmt=plistlib.FMT_BINARY))
    source = reach.needed_sources(
        values(sdenv_apps=["diffusionbee"], sdenv_mac_apps_dir=str(tmp_path / "Applications")), ["mac_apps"]
    )[0]
    assert reach.already_here(source, {})
    info["CFBundleShortVersionString"] = (
        "2.5.4"  # Mochi-style self-update: the pinned bytes are fetched again
    )
    (app / "Info.plist").write_bytes(plistlib.dumps(info))
    assert not reach.already_here(source, {})


def test_what_the_host_has_is_not_probed(bare_repo, tmp_path):
    url, first, tip, work = bare_repo
    calls = []

    def probe_git(*args):
        calls.append(args)
        return ("unreachable", "no network")

    source = {"kind": "git", "what": "the WebUI repository", "url": url, "commit": tip, "tree": str(work)}
    assert reach.unreachable_sentences([source], dict(os.environ), probe_git=probe_git) == []
    assert calls == []  # the tree is at the pinned commit
    moved = {**source, "commit": first}
    assert len(reach.unreachable_sentences([moved], dict(os.environ), probe_git=probe_git)) == 1

    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    st = model.stat()
    cache = tmp_path / "stat-cache.json"
    entry = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
        "sha256": "ab" * 32,
    }
    cache.write_text(json.dumps({"files": {str(model): entry}}))
    source = {"kind": "http", "what": "the model m", "urls": ["http://127.0.0.1:9/m"], "file": str(model),
              "sha256": "ab" * 32, "stat_cache": str(cache), "bundle_dirs": []}  # fmt: skip
    assert reach.already_here(source, {})
    assert not reach.already_here({**source, "sha256": "cd" * 32}, {})  # the cache vouches for other bytes
    index = {"kind": "index", "what": "the package index", "url": "https://pypi.org/simple/",
             "have_files": [str(tmp_path / "venv/.sdenv-venv.json")]}  # fmt: skip
    assert not reach.already_here(index, {})
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv/.sdenv-venv.json").write_text("{}")
    assert reach.already_here(index, {})


# --- The sentences ---------------------------------------------------------------------------------------


def test_one_sentence_per_unreachable_source_with_what_to_do():
    sources = [
        {"kind": "git", "what": "the WebUI repository (sdenv_lock.webui.repo)", "url": "https://g/w.git",
         "commit": COMMIT, "tree": ""},
        {"kind": "git", "what": "the sub-repository BLIP (sdenv_lock.repositories[4])", "url": "https://g/b.git",
         "commit": COMMIT, "tree": ""},
        {"kind": "index", "what": "the package index (sdenv_webui_pip_index_url)", "url": "https://pypi.org/simple/"},
    ]  # fmt: skip

    def probe_git(url, commit, environ):
        return (
            ("unreachable", "Could not resolve host: g")
            if "w.git" in url
            else ("commit", "not our ref " + COMMIT)
        )

    sentences = reach.unreachable_sentences(
        sources,
        {},
        probe_git=probe_git,
        probe_http=lambda url, environ: ("unreachable", "Connection refused"),
    )
    assert sentences == [
        "the WebUI repository (sdenv_lock.webui.repo) at https://g/w.git cannot be reached from this host (Could"
        " not resolve host: g): put a reachable mirror URL in lock.yml, give an offline bundle with BUNDLE=dir,"
        ' or set HTTPS_PROXY (and sdenv_ca_bundle for a proxy with its own CA) as README\'s "Behind a proxy"'
        " says.",
        f"the sub-repository BLIP (sdenv_lock.repositories[4]) at https://g/b.git answers but does not serve the"
        f" pinned commit {COMMIT} (not our ref {COMMIT}): point lock.yml at a repository that has it (a mirror"
        " or fork), or give BUNDLE=dir.",
        "the package index (sdenv_webui_pip_index_url) at https://pypi.org/simple/ cannot be reached from this"
        " host (Connection refused): put a reachable mirror URL in settings.yml (sdenv_webui_pip_index_url), give"
        " an offline bundle with BUNDLE=dir, or set HTTPS_PROXY (and sdenv_ca_bundle for a proxy with its own CA)"
        ' as README\'s "Behind a proxy" says.',
    ]
    # A model answers if any of its URLs does.
    model = {"kind": "http", "what": "the model m", "urls": ["http://a/m", "http://b/m"], "file": ""}
    answers = lambda url, environ: None if url.startswith("http://b") else ("unreachable", "HTTP 404")  # noqa: E731
    assert reach.unreachable_sentences([model], {}, probe_http=answers) == []


# --- The proxy and its CA reach every host task ---------------------------------------------------------


def test_proxy_and_ca_from_settings_or_the_controller():
    controller = {"HTTPS_PROXY": "http://corp:3128", "no_proxy": "localhost", "SSL_CERT_FILE": "/etc/c.pem"}
    env = reach.network_env({"https": "", "http": "", "no_proxy": ""}, "", controller)
    assert env == {
        "HTTPS_PROXY": "http://corp:3128", "https_proxy": "http://corp:3128", "NO_PROXY": "localhost",
        "no_proxy": "localhost", "SSL_CERT_FILE": "/etc/c.pem", "GIT_SSL_CAINFO": "/etc/c.pem",
        "REQUESTS_CA_BUNDLE": "/etc/c.pem",
    }  # fmt: skip
    settings = reach.network_env(
        {"https": "http://p:8080", "http": "http://p:8080"}, "/opt/ca.pem", controller
    )
    assert settings["https_proxy"] == settings["HTTP_PROXY"] == "http://p:8080"
    assert settings["SSL_CERT_FILE"] == settings["GIT_SSL_CAINFO"] == "/opt/ca.pem"
    assert reach.network_env(None, None, {}) == {}


def test_every_task_of_provision_gets_the_network_environment():
    # Ansible's environment keyword is set inside the become command, so sudo does not drop it; task-level
    # environments extend it. The play of the roles that fetch (webui: git, uv; models: downloads) carries it.
    plays = yaml.safe_load((ROOT / "playbooks/provision.yml").read_text())
    roles_play = next(
        play for play in plays if play.get("name") == "Provision the Stable Diffusion environment"
    )
    included = {
        t["ansible.builtin.include_role"]["name"]
        for t in roles_play["tasks"]
        if "ansible.builtin.include_role" in t
    }
    assert {"webui", "models"} <= included
    assert roles_play["environment"] == "{{ sdenv_network_env | default({}) }}"
    preflight = yaml.safe_load((ROOT / "playbooks/preflight.yml").read_text())[0]["tasks"][0]
    assert preflight["sdenv_preflight"]["reach"] == "{{ sdenv_preflight_reach | default(false) }}"
    # Each host probes its sources unless the fleet cache is on (then the controller's fill fetches for all).
    assert plays[0]["vars"]["sdenv_preflight_reach"] == "{{ not (sdenv_fleet_cache_on | bool) }}"
    fill = next(play for play in plays if play.get("name", "").startswith("Fetch every byte once"))
    assert fill["environment"] == "{{ sdenv_network_env | default({}) }}"


def test_git_and_uv_pass_the_environment_on():
    # The modules build their children's environment from their own (which the play's environment made).
    import webui_git_tree

    os.environ["GIT_SSL_CAINFO"] = "/opt/ca.pem"
    try:
        assert webui_git_tree.git_env()["GIT_SSL_CAINFO"] == "/opt/ca.pem"
    finally:
        del os.environ["GIT_SSL_CAINFO"]
    venv_module = (ROOT / "roles/webui/library/webui_venv.py").read_text()
    assert "env = dict(os.environ)" in venv_module  # uv sees SSL_CERT_FILE and the proxy variables
