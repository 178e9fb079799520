"""The LIVE part of `make verify`: start the WebUI as the dummy, talk to its HTTP API, stop it.

This file runs on the verified host itself (copied there by the suite, run with the Python Ansible uses on
that host), so it is stdlib only and works on Python >= 3.9: the WebUI binds loopback only, and a client on
the controller could not reach it on a remote Mac. It prints one JSON document (the checks, and the images
as base64) that the suite on the controller turns into table rows and report files.

    python3 webui_client.py live SPEC.json      # start, check, generate, stop; JSON on stdout
    python3 webui_client.py probe HOST PORT     # one TCP connect: how it ended (for the offline proof)

Facts it relies on (shared/UPSTREAM.md): the API's sampler/scheduler split ("DPM++ SDE" + "Karras"), the
silent fallback to another sampler on an unknown name (so only the infotext proves what ran), `Lora hashes`
in the infotext as the only sign a LoRA was applied, and the server finishing a request on SIGTERM.
"""

import base64
import contextlib
import errno
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

# modules/infotext_utils.py's own pattern for the `Key: value, Key: "quoted, value"` line.
INFOTEXT_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class LiveError(Exception):
    """A step of the live run that cannot go on; the message names what and why."""


# --- Infotext and PNG -------------------------------------------------------------------------------


def parse_infotext(text):
    """The WebUI's generation text -> {"prompt", "negative_prompt", "params": {key: value}}.

    The last line holds the parameters; lines before it are the prompt, then an optional
    `Negative prompt:` part. Quoted values (Lora hashes) are unquoted the way the WebUI writes them (JSON).
    """
    lines = (text or "").strip().split("\n")
    params_line = lines[-1] if lines else ""
    if len(INFOTEXT_PARAM.findall(params_line)) < 3:
        # No parameter line at all (a prompt only): nothing to read the settings from.
        params_line, body = "", lines
    else:
        body = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    params = {}
    for key, value in INFOTEXT_PARAM.findall(params_line):
        value = value.strip()
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        params[key.strip()] = value
    return {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative), "params": params}


def parse_lora_hashes(value):
    """`glasses-2: e68952afd3de, other: 0123456789ab` -> {"glasses-2": "e68952afd3de", ...}."""
    hashes = {}
    for part in (value or "").split(","):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip():
            hashes[name.strip()] = digest.strip()
    return hashes


def png_text_chunks(data):
    """The text chunks (tEXt, zTXt, iTXt) of a PNG as {keyword: text}; raises LiveError on a non-PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise LiveError("the image is not a PNG (no PNG signature)")
    chunks, pos = {}, len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise LiveError("the PNG is truncated")
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            chunks[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _language, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            chunks[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return chunks


def png_size(data):
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise LiveError("the image is not a PNG (no IHDR)")
    return struct.unpack(">II", data[16:24])


# --- HTTP API -----------------------------------------------------------------------------------------


class WebUIClient:
    """The few endpoints verify needs. No proxy is ever used: the server is on loopback."""

    def __init__(self, base_url, timeout=30):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method, path, body=None, timeout=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        # base_url is always http://127.0.0.1:<port> (run_live builds it): no file: or other scheme.
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(req, timeout=timeout or self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise LiveError(f"{method} {path} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LiveError(f"{method} {path} failed: {getattr(exc, 'reason', exc)}") from exc
        try:
            return json.loads(payload.decode("utf-8"))
        except ValueError as exc:
            raise LiveError(f"{method} {path} did not answer JSON: {payload[:200]!r}") from exc

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, timeout=None):
        return self.request("POST", path, body, timeout=timeout)

    def sd_models(self):
        return self.get("/sdapi/v1/sd-models")

    def samplers(self):
        return self.get("/sdapi/v1/samplers")

    def schedulers(self):
        return self.get("/sdapi/v1/schedulers")

    def loras(self):
        return self.get("/sdapi/v1/loras")

    def txt2img(self, payload, timeout=None):
        return self.post("/sdapi/v1/txt2img", payload, timeout=timeout)

    def wait_ready(self, deadline, alive=lambda: True, interval=0.5):
        """Poll until the API answers (sd-models is there in both UI and API-only mode)."""
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not alive():
                raise LiveError(f"the WebUI process exited before its API answered ({last})")
            try:
                self.sd_models()
                return
            except LiveError as exc:
                last = str(exc)
            time.sleep(interval)
        raise LiveError(f"the WebUI API did not answer in time ({last})")


# --- What the answers must say ------------------------------------------------------------------------


def find_checkpoint(models, filename):
    """The sd-models entry for a checkpoint file name (basename match; the API gives absolute paths)."""
    for entry in models or []:
        if os.path.basename(entry.get("filename") or "") == filename:
            return entry
    return None


def checkpoint_hash_problem(entry, sha256):
    """None when the entry's hashes agree with the pin; else a sentence. A hash the WebUI has not computed
    yet (None) is a problem too: verify asks after a generation, when the loaded model has been hashed."""
    sha256 = sha256.lower()
    if entry.get("sha256"):
        if entry["sha256"].lower() != sha256:
            return f"sha256 {entry['sha256']} is not the pinned {sha256}"
        return None
    if entry.get("hash"):
        if entry["hash"].lower() != sha256[:10]:
            return f"short hash {entry['hash']} is not the pinned {sha256[:10]}"
        return None
    return "the WebUI reports no hash for it"


def names_of(entries, *keys):
    found = set()
    for entry in entries or []:
        for key in keys:
            if isinstance(entry, dict) and entry.get(key):
                found.add(entry[key])
    return found


def infotext_problems(infotext, expect):
    """Compare a parsed infotext with what was asked: sampler, schedule type, model hash, size, steps,
    seed, and (when expect has `lora`) the Lora hashes entry. Returns a list of sentences."""
    params = infotext["params"]
    problems = []
    wanted = {
        "Sampler": expect["sampler"],
        "Schedule type": expect["scheduler"],
        "Model hash": expect["sha256"][:10],
        "Size": f"{expect['width']}x{expect['height']}",
        "Steps": str(expect["steps"]),
        "Seed": str(expect["seed"]),
    }
    for key, value in wanted.items():
        got = params.get(key)
        if got is None:
            problems.append(f"the infotext has no {key!r} (wanted {value})")
        elif str(got).lower() != str(value).lower():
            problems.append(f"the infotext says {key}: {got} (wanted {value})")
    if expect.get("lora"):
        hashes = parse_lora_hashes(params.get("Lora hashes"))
        name, digest = expect["lora"], expect.get("lora_hash")
        if name not in hashes:
            problems.append(
                f"the infotext has no Lora hashes entry for {name} (the LoRA was not applied;"
                f" Lora hashes: {params.get('Lora hashes')!r})"
            )
        elif digest and hashes[name].lower() != digest[: len(hashes[name])].lower():
            problems.append(f"Lora hashes says {name}: {hashes[name]} (pinned {digest[:12]})")
    return problems


# --- Network cut (OFFLINE) ----------------------------------------------------------------------------


def sandbox_profile():
    """A macOS sandbox-exec (SBPL) profile: everything allowed but the network, except loopback.

    Written from Apple's sandbox profile language as sandbox-exec uses it (`(version 1)`, `allow`/`deny`
    rules, later rules win; ip filters accept only `localhost` or `*` as host). Unix-domain sockets stay
    allowed: they are local IPC (Python's multiprocessing, the system log), not network.
    """
    return "\n".join(
        [
            "(version 1)",
            "(allow default)",
            "(deny network*)",
            '(allow network-bind (local ip "localhost:*"))',
            '(allow network-inbound (local ip "localhost:*"))',
            '(allow network-outbound (remote ip "localhost:*"))',
            "(allow network* (local unix-socket))",
            "(allow network* (remote unix-socket))",
            "",
        ]
    )


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def bring_loopback_up():
    """In a fresh Linux network namespace `lo` exists but is down; the API needs it up."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def parse_net_dev(text):
    """/proc/<pid>/net/dev -> interface names of that process's network namespace."""
    names = []
    for line in text.splitlines()[2:]:
        name, sep, _ = line.partition(":")
        if sep:
            names.append(name.strip())
    return sorted(names)


def probe(host, port, timeout=3.0):
    """One TCP connect: 'connected', 'refused', 'unreachable', 'denied' or 'error: ...'.

    Inside the cut the answer is 'unreachable' (Linux: no route in a namespace with only lo) or 'denied'
    (macOS sandbox: EPERM) before any packet leaves; outside it is 'connected' or 'refused'.
    """
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except PermissionError:
        return "denied"
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return "unreachable"
        return f"error: {exc}"


# --- The live run ---------------------------------------------------------------------------------------


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# webui.sh sources webui-user.sh, which sets COMMANDLINE_ARGS; launch.py appends those after its own argv and
# argparse keeps the last value, so flags given to webui.sh itself would lose to the configured --port.
# The toolkit's webui-user.sh appends $SDENV_EXTRA_COMMANDLINE_ARGS last: verify hands its flags over there
# and otherwise starts the WebUI exactly as webui.sh does (its directory, its venv, launch.py from it).
EXTRA_ARGS_VARIABLE = "SDENV_EXTRA_COMMANDLINE_ARGS"


def verify_args(spec, port):
    """The flags verify adds: API only, on a free loopback port; the CPU flags only on a host with no GPU.

    --server-name is what keeps it on loopback: with --nowebui, v1.10.1 hands uvicorn the host None unless
    --server-name (or --listen) is given, and uvicorn then listens on every interface (0.0.0.0 and ::).
    The UI mode (make run) binds 127.0.0.1 by itself (gradio's default).
    """
    args = ["--api", "--nowebui", "--port", str(port), "--server-name", "127.0.0.1"]
    args += spec.get("extra_args", [])
    if spec.get("cpu_only"):
        args += ["--use-cpu", "all", "--no-half"]
    return args


def server_argv(spec):
    """webui.sh, as `make run` starts it (verify's flags travel in the environment, see above)."""
    argv = ["bash", "webui.sh"]
    if spec.get("offline") == "sandbox":
        argv = ["sandbox-exec", "-p", sandbox_profile(), *argv]
    return argv


def account_of(name):
    import grp
    import pwd

    entry = pwd.getpwnam(name)
    groups = sorted({g.gr_gid for g in grp.getgrall() if name in g.gr_mem} | {entry.pw_gid})
    return entry, groups


def start_server(spec, port, log_path):
    """Start the WebUI as the dummy (never root) in its own process group, output to log_path."""
    user_script = os.path.join(spec["webui_dir"], "webui-user.sh")
    try:
        with open(user_script, encoding="utf-8", errors="replace") as handle:
            current = EXTRA_ARGS_VARIABLE in handle.read()
    except OSError as exc:
        raise LiveError(f"cannot read {user_script} ({exc.strerror}): run make provision first") from exc
    if not current:
        raise LiveError(
            f"{user_script} was written by an older version of the toolkit (it does not pass "
            f"{EXTRA_ARGS_VARIABLE} on to the WebUI): run make provision, then verify again"
        )
    extra_env = {EXTRA_ARGS_VARIABLE: shlex.join(verify_args(spec, port))}
    return start_as_user(spec, server_argv(spec), spec["webui_dir"], extra_env, log_path)


def start_as_user(spec, argv, cwd, extra_env, log_path, what="the WebUI"):
    """argv in cwd as the dummy (never root) in its own process group, output to log_path (also ComfyUI's,
    comfyui_client.py)."""
    entry, groups = account_of(spec["user"])
    if entry.pw_uid == 0:
        raise LiveError(f"refusing to start {what} as root: the dummy user is root")
    env = {
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell,
        "PATH": spec.get("path") or "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        # Without it the log holds back "Model loaded" until exit.
        "PYTHONUNBUFFERED": "1",
        **extra_env,
        **spec.get("env", {}),
    }
    as_user = {}
    if os.geteuid() != entry.pw_uid:
        if os.geteuid() != 0:
            raise LiveError(f"cannot start {what} as {entry.pw_name}: this runs as uid {os.geteuid()}")
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it after this returns
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
    finally:
        log.close()


def stop_server(proc, grace):
    """SIGTERM to the whole process group, then wait until every process in it has exited; SIGKILL what is
    left after `grace` seconds. Returns (stopped cleanly, what happened).

    The group leader is webui.sh, a bash that dies at once on SIGTERM; the WebUI's python under it finishes
    the request in progress and shuts down in its own time (uvicorn: about 2 s for v1.10.1 here). So the
    leader's exit says nothing: only an empty group is a stopped WebUI.
    """
    if proc.poll() is not None:
        return False, f"the WebUI had already exited (status {proc.returncode})"
    started = time.monotonic()
    with_signal(proc.pid, signal.SIGTERM)
    try:
        while time.monotonic() - started < grace:
            proc.poll()  # reap the leader, or its zombie keeps the group alive
            if not group_alive(proc.pid):
                return True, f"stopped by SIGTERM in {time.monotonic() - started:.1f} s (every process of it)"
            time.sleep(0.1)
        return False, f"still running {grace} s after SIGTERM: killed"
    finally:
        # Whatever happened, nothing of the group may outlive verify.
        with_signal(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user in it: still there
    return True


def with_signal(pgid, sig):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def log_tail(path, lines=15):
    try:
        with open(path, "rb") as handle:
            text = handle.read()[-8000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class Checks:
    def __init__(self):
        self.items = []

    def add(self, name, ok, detail):
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok


def generate(client, checks, spec, name, prompt, expect, out_dir):
    image = spec["image"]
    payload = {
        "prompt": prompt,
        "negative_prompt": "",
        "steps": image["steps"],
        "width": image["width"],
        "height": image["height"],
        "cfg_scale": image.get("cfg_scale", 7),
        "seed": image["seed"],
        "sampler_name": spec["sampler"],
        "scheduler": spec["scheduler"],
        "n_iter": 1,
        "batch_size": 1,
        "send_images": True,
        "save_images": False,
    }
    started = time.monotonic()
    try:
        answer = client.txt2img(payload, timeout=spec.get("generate_timeout", 1800))
    except LiveError as exc:
        checks.add(name, False, str(exc))
        return None
    seconds = time.monotonic() - started
    problems = []
    try:
        data = base64.b64decode((answer.get("images") or [""])[0].split(",", 1)[-1])
        width, height = png_size(data)
        chunks = png_text_chunks(data)
    except (LiveError, ValueError) as exc:
        checks.add(name, False, f"no usable image in the answer: {exc}")
        return None
    if (width, height) != (image["width"], image["height"]):
        problems.append(f"the PNG is {width}x{height}, not {image['width']}x{image['height']}")
    try:
        info = json.loads(answer.get("info") or "{}")
    except ValueError:
        info = {}
    infotexts = info.get("infotexts") or []
    if not infotexts:
        problems.append("the answer's info has no infotexts")
    else:
        problems += infotext_problems(parse_infotext(infotexts[0]), expect)
    if "parameters" not in chunks:
        problems.append("the PNG has no 'parameters' text chunk")
    else:
        problems += [
            f"PNG parameters: {p}" for p in infotext_problems(parse_infotext(chunks["parameters"]), expect)
        ]
    path = os.path.join(out_dir, f"{name.replace(' ', '-').replace('/', '-')}.png")
    with open(path, "wb") as handle:
        handle.write(data)
    detail = (
        "; ".join(problems)
        if problems
        else f"{width}x{height} in {seconds:.0f} s: "
        + (infotexts[0].strip().splitlines()[-1] if infotexts else "")
    )
    checks.add(name, not problems, detail)
    # The infotext (the WebUI's own record of what it ran) travels with the image: the report shows them side by side.
    infotext = infotexts[0] if infotexts else chunks.get("parameters", "")
    return {
        "name": name,
        "path": path,
        "png": base64.b64encode(data).decode("ascii"),
        "prompt": prompt,
        "infotext": infotext,
    }


def run_live(spec):
    """Start, check, generate, stop. Returns {"checks": [...], "images": [...], "log_tail": ...}."""
    checks, images = Checks(), []
    out_dir = spec["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "webui.log")
    offline = {}
    if spec.get("offline") == "netns":
        bring_loopback_up()
        if spec.get("probe"):
            offline["probe_inside"] = probe(*spec["probe"])
    port = free_loopback_port()
    started = time.monotonic()
    try:
        proc = start_server(spec, port, log_path)
    except (LiveError, OSError) as exc:
        checks.add("server starts", False, f"could not start webui.sh: {exc}")
        return {"checks": checks.items, "images": images, "log_tail": ""}
    client = WebUIClient(f"http://127.0.0.1:{port}", timeout=spec.get("request_timeout", 60))
    try:
        client.wait_ready(
            time.monotonic() + spec.get("ready_timeout", 600), alive=lambda: proc.poll() is None
        )
        checks.add("server starts", True, f"API on 127.0.0.1:{port} after {time.monotonic() - started:.0f} s")
    except LiveError as exc:
        checks.add("server starts", False, f"{exc}; log: {log_tail(log_path, 5)}")
        stop_server(proc, spec.get("stop_grace", 60))
        return {"checks": checks.items, "images": images, "log_tail": log_tail(log_path)}
    try:
        check_cut(spec, proc, checks, offline)
        live_checks(client, checks, spec, images, out_dir)
    except LiveError as exc:
        checks.add("API", False, str(exc))
    finally:
        checks.add("server stops", *stop_server(proc, spec.get("stop_grace", 60)))
    return {"checks": checks.items, "images": images, "log_tail": log_tail(log_path), "offline": offline}


def check_cut(spec, proc, checks, offline, app="the WebUI"):
    """The "network cut" row under OFFLINE=1, seen from the running server (also ComfyUI's: app names it)."""
    if spec.get("offline") == "netns":
        offline.update(netns_facts(proc.pid, spec.get("host_netns")))
        ok = offline["interfaces"] == ["lo"] and offline["netns"] not in (offline["host_netns"], "unreadable")
        if spec.get("probe"):
            ok = ok and offline["probe_inside"] in ("unreachable", "denied")
        checks.add("network cut", ok, describe_cut(offline, app))
    elif spec.get("offline") == "sandbox":
        offline["probe_inside"] = sandboxed_probe(spec) if spec.get("probe") else None
        ok = spec.get("probe") is None or offline["probe_inside"] == "denied"
        checks.add("network cut", ok, describe_cut({**offline, "sandbox": True}, app))


def live_checks(client, checks, spec, images, out_dir):
    checkpoint, lora = spec["checkpoint"], spec.get("lora")
    models = client.sd_models()
    checks.add(
        f"sd-models lists {checkpoint['file']}",
        find_checkpoint(models, checkpoint["file"]) is not None,
        "listed"
        if find_checkpoint(models, checkpoint["file"])
        else f"listed: {[m.get('title') for m in models]}",
    )
    samplers = names_of(client.samplers(), "name")
    checks.add(
        f"samplers include {spec['sampler']}", spec["sampler"] in samplers, f"{len(samplers)} samplers"
    )
    schedulers = names_of(client.schedulers(), "label", "name")
    checks.add(
        f"schedulers include {spec['scheduler']}",
        spec["scheduler"] in schedulers,
        f"{len(schedulers)} scheduler names"
        if spec["scheduler"] in schedulers
        else f"have {sorted(schedulers)}",
    )
    if lora:
        loras = names_of(client.loras(), "name")
        checks.add(f"loras include {lora['name']}", lora["name"] in loras, f"have {sorted(loras)}")
    image = spec["image"]
    expect = {
        "sampler": spec["sampler"],
        "scheduler": spec["scheduler"],
        "sha256": checkpoint["sha256"],
        **image,
    }
    images.append(
        generate(client, checks, spec, f"txt2img {spec['prompt']}", spec["prompt"], expect, out_dir)
    )
    # After a generation the loaded checkpoint has been hashed: now sd-models must carry the pin.
    entry = find_checkpoint(client.sd_models(), checkpoint["file"])
    problem = "not listed" if entry is None else checkpoint_hash_problem(entry, checkpoint["sha256"])
    checks.add(
        f"sd-models hash of {checkpoint['file']}",
        problem is None,
        problem or f"sha256 {checkpoint['sha256'][:10]}... as pinned",
    )
    if lora:
        prompt = f"<lora:{lora['name']}:1> {spec['prompt']}, {lora.get('trigger', 'glasses')}"
        with_lora = {**expect, "lora": lora["name"], "lora_hash": lora.get("addnet_hash")}
        images.append(generate(client, checks, spec, "txt2img with LoRA", prompt, with_lora, out_dir))
    images[:] = [image for image in images if image]


def netns_facts(pid, host_netns):
    """The server's own view: its interfaces and its network namespace, against the host's (read outside
    the cut by the suite: inside, /proc/1/ns/net is not readable)."""
    with open(f"/proc/{pid}/net/dev", encoding="ascii") as handle:
        interfaces = parse_net_dev(handle.read())
    try:
        netns = os.readlink(f"/proc/{pid}/ns/net")
    except PermissionError:
        netns = "unreadable"
    return {"interfaces": interfaces, "netns": netns, "host_netns": host_netns or "unknown"}


def sandboxed_probe(spec):
    code = "import sys, webui_client; print(webui_client.probe(sys.argv[1], sys.argv[2]))"
    here = os.path.dirname(os.path.abspath(__file__))
    completed = subprocess.run(
        ["sandbox-exec", "-p", sandbox_profile(), sys.executable, "-c", code, *map(str, spec["probe"])],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": here, "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    return completed.stdout.strip() or f"error: {completed.stderr.strip()[-200:]}"


def describe_cut(offline, app="the WebUI"):
    parts = []
    if "interfaces" in offline:
        parts.append(f"interfaces seen by {app}: {', '.join(offline['interfaces'])}")
        parts.append(
            "own network namespace" if offline["netns"] != offline["host_netns"] else "HOST namespace"
        )
    if offline.get("sandbox"):
        parts.append("sandbox-exec: all network denied but loopback")
    if offline.get("probe_inside"):
        parts.append(f"connect to a non-loopback address from inside: {offline['probe_inside']}")
    return "; ".join(parts)


def main(argv):
    if len(argv) == 3 and argv[1] == "live":
        with open(argv[2], encoding="utf-8") as handle:
            spec = json.load(handle)
        json.dump(run_live(spec), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if len(argv) == 4 and argv[1] == "probe":
        print(probe(argv[2], argv[3]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
