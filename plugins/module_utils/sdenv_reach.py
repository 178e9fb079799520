"""Reachability before change: every source this run will fetch from answers, checked on the host before
the first task that changes anything (module sources_reachable, run by the preflight).

What counts as reachable, and why:
- a git repository serves its pinned commit. `git ls-remote URL` proves the server answers and lists its
  refs; when the commit is a ref's tip (or a peeled tag) that is the proof. Otherwise a fetch of that one
  commit object by its id into a throwaway repository (`git fetch --depth=1 --filter=tree:0 URL COMMIT`:
  no trees, no blobs, a few hundred bytes on GitHub) proves it. A server that cannot fetch by id at all
  (git's dumb HTTP transport: no shallow fetch) counts as reachable on ls-remote's word, and the clone checks
  the commit, as it always has; a smart server that refuses the id ("not our ref") does not serve it.
- an archive, a model or the package index answers: one HEAD request, never with a token (a token is a
  secret and the probe does not need one): 2xx/3xx, 401/403 (a download that needs a token answers so) and
  405/501 (a server that does GET only) count; 404/410, other 5xx and no answer do not. HEAD rather than a
  1-byte GET: it moves no content, and it leaves servers that count downloads (and the tests' fixture
  servers, which count requests) untouched.
- a source the host already has is not probed: a tree at the pinned commit, a model file the stat cache
  vouches for, an archive in the archive cache; with BUNDLE= nothing is probed (the bundle check covers it).

Plain Python; probes take an `environ` (proxy and CA variables) so they see what the roles will see.
"""

import os
import shutil
import subprocess
import tempfile

try:
    from ansible.module_utils import sdenv_messages as say
except ImportError:  # the controller and the unit tests import the module_utils directory directly
    import sdenv_messages as say

TIMEOUT = 20
GIT_TIMEOUT = 60
# The server is there: the real download brings the token (401, 403), or uses GET where HEAD is not done
# (405, 501). A proxy's own 502/503/504 says the origin is not reachable.
ANSWERS = {401, 403, 405, 501}
_uname = os.uname  # the host's system and architecture (a Mac app's disk image is per architecture)


# --- What this run needs ---------------------------------------------------------------------------------


def needed_sources(values, uses, pending_names=()):
    """The sources the target will fetch, as [{kind, what, url(s), ...}] from the resolved values.

    kind "git": url, commit, tree (where the host would have it); "http": urls (any answering will do),
    file (a local copy that makes the probe needless), sha256 and stat_cache for models; "index": url."""
    lock = values.get("sdenv_lock") or {}
    entry_points = {use if ":" in use else use + ":main" for use in uses}
    if values.get("sdenv_bundle"):
        return []
    found = []
    if "webui:main" in entry_points:
        webui_dir = values.get("sdenv_webui_dir") or ""
        webui = lock.get("webui") or {}
        if webui.get("repo"):
            found.append(
                {"kind": "git", "what": "the WebUI repository (sdenv_lock.webui.repo)", "url": webui["repo"],
                 "commit": webui.get("commit"), "tree": webui_dir}
            )  # fmt: skip
        for index, repo in enumerate(lock.get("repositories") or []):
            found.append(
                {"kind": "git", "what": f"the sub-repository {repo.get('dir')} (sdenv_lock.repositories[{index}])",
                 "url": repo.get("repo"), "commit": repo.get("commit"),
                 "tree": f"{webui_dir}/repositories/{repo.get('dir')}" if webui_dir else ""}
            )  # fmt: skip
        bootstrap = str(values.get("sdenv_webui_venv_bootstrap", True)).lower() not in ("false", "no", "0")
        wheelhouse = values.get("sdenv_webui_wheelhouse") or ""
        if bootstrap and not wheelhouse:
            # A completed venv bootstrap (its marker) has what the index and the archive gave it.
            venv_dir = values.get("sdenv_webui_venv_dir") or (f"{webui_dir}/venv" if webui_dir else "")
            built = [f"{venv_dir}/.sdenv-venv.json"] if venv_dir else []
            archive_dir = values.get("sdenv_webui_archive_dir") or ""
            clip = (lock.get("webui_venv") or {}).get("clip") or {}
            if clip.get("url"):
                cached = [f"{archive_dir}/{clip.get('file')}"] if archive_dir else []
                found.append(
                    {"kind": "http", "what": "the CLIP archive (sdenv_lock.webui_venv.clip.url)",
                     "urls": [clip["url"]], "have_files": built + cached}
                )  # fmt: skip
            index_url = values.get("sdenv_webui_pip_index_url") or "https://pypi.org/simple/"
            found.append(
                {"kind": "index", "what": "the package index (sdenv_webui_pip_index_url)", "url": index_url,
                 "have_files": built}
            )  # fmt: skip
    apps = values.get("sdenv_apps") or []
    if "comfyui:main" in entry_points and "comfyui" in apps:
        comfyui = lock.get("comfyui") or {}
        if comfyui.get("repo"):
            found.append(
                {"kind": "git", "what": "the ComfyUI repository (sdenv_lock.comfyui.repo)", "url": comfyui["repo"],
                 "commit": comfyui.get("commit"), "tree": values.get("sdenv_comfyui_dir") or ""}
            )  # fmt: skip
    if "mac_apps:main" in entry_points:
        home = values.get("sdenv_user_home") or ""
        applications = values.get("sdenv_mac_apps_dir") or (f"{home}/Applications" if home else "")
        for name in apps:
            entry = (lock.get("mac_apps") or {}).get(name)
            if not isinstance(entry, dict):
                continue
            # The cask's disk image for the host's own architecture, which only the host knows: the probe
            # picks it there (mac_app_urls). An app already at its pinned version needs no download.
            found.append(
                {"kind": "http", "what": f"the {name} disk image (sdenv_lock.mac_apps.{name}.downloads)",
                 "urls_by_machine": {arch: d.get("url") for arch, d in (entry.get("downloads") or {}).items()
                                     if isinstance(d, dict)},
                 "app": {"path": f"{applications}/{entry.get('app')}" if applications else "",
                         "bundle_id": entry.get("bundle_id"), "version": str(entry.get("version"))}}
            )  # fmt: skip
    if "models:main" in entry_points:
        kind_dirs = values.get("sdenv_models_kind_dirs") or {}
        enabled = values.get("sdenv_models_enabled") or []
        for index, model in enumerate(lock.get("models") or []):
            if (
                not isinstance(model, dict)
                or model.get("name") not in enabled
                or model.get("name") in pending_names
            ):
                continue
            if not model.get("urls"):
                continue  # served by a bundle directory (the role says so if it is not there)
            directory = kind_dirs.get(model.get("kind", "checkpoint"), "")
            found.append(
                {"kind": "http", "what": f"the model {model['name']} (sdenv_lock.models[{index}].urls)",
                 "urls": list(model["urls"]), "file": f"{directory}/{model.get('file')}" if directory else "",
                 "sha256": model.get("sha256"), "stat_cache": values.get("sdenv_models_stat_cache") or "",
                 "bundle_dirs": list(values.get("sdenv_models_bundle_dirs") or [])}
            )  # fmt: skip
    return found


# --- What the host has already ---------------------------------------------------------------------------


def tree_at(path, commit, environ, git="git"):
    if not path or not commit or not os.path.isdir(os.path.join(path, ".git")):
        return False
    done = subprocess.run(
        [git, "-c", "safe.directory=*", "-C", path, "rev-parse", "HEAD"],
        capture_output=True, text=True, env=environ, check=False,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == commit


def model_verified(source):
    """The model file is in place and the stat cache vouches for it (same size, mtime, inode, device and the
    pinned SHA256), or a bundle directory holds it (the role takes it from there)."""
    name = os.path.basename(source.get("file") or "")
    if name and any(os.path.isfile(os.path.join(d, name)) for d in source.get("bundle_dirs") or []):
        return True
    path, cache = source.get("file"), source.get("stat_cache")
    if not path or not cache or not source.get("sha256"):
        return False
    try:
        import json

        with open(cache, encoding="utf-8") as handle:
            entry = (json.load(handle).get("files") or {}).get(path) or {}
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    found = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}
    return all(entry.get(k) == v for k, v in found.items()) and entry.get("sha256") == source["sha256"]


def app_at_pin(app):
    """The Mac app is in place at its pinned bundle id and version (mac_apps.plan would keep it)."""
    try:
        from ansible.module_utils.mac_apps import present_bundle
    except ImportError:
        from mac_apps import present_bundle

    present = present_bundle(app.get("path") or "") if app.get("path") else None
    return bool(present) and (present.get("bundle_id"), present.get("version")) == (
        app.get("bundle_id"),
        app.get("version"),
    )


def mac_app_urls(source, system=None, machine=None):
    """The disk image URL of a Mac app for this host: [] off macOS (the preflight's platform rule says why,
    once) and for an architecture the cask does not ship (its own rule says so)."""
    uname = _uname()
    system, machine = system or uname.sysname, machine or uname.machine
    if system != "Darwin":
        return []
    arch = "arm64" if machine in ("arm64", "aarch64") else machine
    url = (source.get("urls_by_machine") or {}).get(arch)
    return [url] if url else []


def already_here(source, environ):
    if source.get("app") is not None:
        return not mac_app_urls(source) or app_at_pin(source["app"])
    if source["kind"] == "git":
        return tree_at(source.get("tree"), source.get("commit"), environ)
    if source.get("sha256"):
        return model_verified(source)
    return any(os.path.isfile(path) for path in source.get("have_files") or [])


# --- Probes: None when the source answers, else (sentence kind, reason) ----------------------------------


def probe_http(url, environ, timeout=TIMEOUT):
    try:
        from ansible.module_utils.sdenv_http import connect
    except ImportError:
        from sdenv_http import connect

    if url.startswith("file://"):
        return None if os.path.exists(url[len("file://") :]) else ("unreachable", "no such file")
    try:
        conn, target = connect(url, timeout, environ)
        conn.request("HEAD", target, headers=getattr(conn, "sdenv_proxy_headers", {}))
        status = conn.getresponse().status
        conn.close()
    except OSError as error:
        return "unreachable", describe_error(error)
    except ValueError as error:
        # A URL the value checks reject (ftp://): the preflight probes in the same module run as it reads the
        # host, before those checks have spoken, and reports their sentence first.
        return "unreachable", str(error)
    if status < 400 or status in ANSWERS:
        return None
    return "unreachable", f"HTTP {status}"


def describe_error(error):
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    if "Tunnel connection failed" in str(error):
        text = "the proxy refused the tunnel: " + str(error).split(":", 1)[-1].strip()
    return text.rstrip(".")


def probe_git(url, commit, environ, git="git"):
    if shutil.which(git, path=environ.get("PATH")) is None:
        # No git on the host yet (the packages role installs it): the server's ref advertisement answers.
        return probe_http(url.rstrip("/") + "/info/refs?service=git-upload-pack", environ)
    env = {**environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"}
    try:
        listed = subprocess.run(
            [git, "ls-remote", url], capture_output=True, text=True, env=env, check=False, timeout=GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return "unreachable", f"no answer within {GIT_TIMEOUT} s"
    if listed.returncode != 0:
        return "unreachable", last_line(listed.stderr)
    if not commit or any(line.split("\t")[0] == commit for line in listed.stdout.splitlines()):
        return None
    with tempfile.TemporaryDirectory(prefix="sdenv-probe-") as tmp:
        subprocess.run([git, "init", "-q", "--bare", tmp], capture_output=True, env=env, check=True)
        try:
            fetched = subprocess.run(
                [git, "-C", tmp, "fetch", "-q", "--depth=1", "--filter=tree:0", "--no-tags", url, commit],
                capture_output=True, text=True, env=env, check=False, timeout=GIT_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "unreachable", f"no answer within {GIT_TIMEOUT} s"
    if fetched.returncode == 0:
        return None
    error = fetched.stderr
    if "dumb http" in error.lower() or "does not support shallow" in error.lower():
        return None  # cannot fetch by id at all: ls-remote answered, the clone checks the commit
    if "not our ref" in error or "couldn't find remote ref" in error.lower():
        return "commit", last_line(error)
    return "unreachable", last_line(error)


def last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if not line.startswith("warning:")]
    return (lines[-1] if lines else "no output").removeprefix("fatal: ").rstrip(".")


# --- The check -------------------------------------------------------------------------------------------


def unreachable_sentences(sources, environ, probe_git=probe_git, probe_http=probe_http):
    """One sentence per source that is needed, not already here and does not answer, in the sources' order.
    The probes run side by side: on a network that drops packets each one waits for its timeout."""
    from concurrent.futures import ThreadPoolExecutor

    def sentence(source):
        if already_here(source, environ):
            return None
        if source["kind"] == "git":
            found = probe_git(source["url"], source.get("commit"), environ)
            if found and found[0] == "commit":
                return say.commit_not_served(source["what"], source["url"], source["commit"], found[1])
            return say.unreachable(source["what"], source["url"], found[1]) if found else None
        if source.get("urls_by_machine") is not None:
            urls = mac_app_urls(source)
        else:
            urls = source["urls"] if source["kind"] == "http" else [source["url"]]
        failures = []
        for url in urls:
            found = probe_http(url, environ)
            if found is None:
                return None
            failures.append((url, found[1]))
        mirror_in = "settings.yml (sdenv_webui_pip_index_url)" if source["kind"] == "index" else "lock.yml"
        if not failures:
            return say.unreachable(source["what"], "(no URL)", "no URL", mirror_in)
        if len(failures) == 1:
            return say.unreachable(source["what"], *failures[0], mirror_in)
        return say.unreachable(
            source["what"],
            ", ".join(u for u, _ in failures),
            "; ".join(f"{u}: {r}" for u, r in failures),
            mirror_in,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [found for found in pool.map(sentence, sources) if found]


def network_env(proxy, ca_bundle, controller_environ):
    """The variables every host task gets (play `environment:`), so git, uv and the downloads see the proxy
    and trust its CA through sudo: settings.yml's sdenv_proxy / sdenv_ca_bundle, else the controller's own
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY / SSL_CERT_FILE. Both spellings of the proxy names (curl and git read
    the lower case, other tools the upper). Empty values are left out."""
    proxy = proxy or {}

    def pick(key, *names):
        value = proxy.get(key) or next(
            (controller_environ.get(n) for n in names if controller_environ.get(n)), ""
        )
        return str(value or "")

    https = pick("https", "HTTPS_PROXY", "https_proxy")
    http = pick("http", "HTTP_PROXY", "http_proxy")
    no_proxy = pick("no_proxy", "NO_PROXY", "no_proxy")
    ca = str(ca_bundle or controller_environ.get("SSL_CERT_FILE") or "")
    env = {
        "HTTPS_PROXY": https, "https_proxy": https, "HTTP_PROXY": http, "http_proxy": http,
        "NO_PROXY": no_proxy, "no_proxy": no_proxy,
        # uv (rustls) and Python's ssl read SSL_CERT_FILE, git GIT_SSL_CAINFO, requests REQUESTS_CA_BUNDLE.
        "SSL_CERT_FILE": ca, "GIT_SSL_CAINFO": ca, "REQUESTS_CA_BUNDLE": ca,
    }  # fmt: skip
    return {k: v for k, v in env.items() if v}
