"""The LIVE client of make verify: infotext and PNG parsing, the checks on API answers, the sandbox profile,
and the client against the FAKE WebUI API (tests/fixtures/fake_webui_api.py, not the real WebUI)."""

import base64
import json
import struct
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verify"))

import fake_webui_api
import webui_client

INFOTEXT = (
    "<lora:glasses-2:1> 1woman, glasses\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 8, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, Size: 256x256, "
    'Model hash: 3ba83964c7, Model: testshape_v15, Lora hashes: "glasses-2: e68952afd3de, other: 0123456789ab", '
    "Version: v1.10.1"
)
EXPECT = {
    "sampler": "DPM++ SDE",
    "scheduler": "Karras",
    "sha256": "3ba83964c7" + "0" * 54,
    "width": 256,
    "height": 256,
    "steps": 8,
    "seed": 1234,
}


def test_parse_infotext_reads_prompt_negative_and_quoted_params():
    parsed = webui_client.parse_infotext(INFOTEXT)
    assert parsed["prompt"] == "<lora:glasses-2:1> 1woman, glasses"
    assert parsed["negative_prompt"] == "lowres, bad hands"
    assert parsed["params"]["Sampler"] == "DPM++ SDE"
    assert parsed["params"]["Schedule type"] == "Karras"
    assert parsed["params"]["Model hash"] == "3ba83964c7"
    assert parsed["params"]["Lora hashes"] == "glasses-2: e68952afd3de, other: 0123456789ab"
    assert parsed["params"]["Version"] == "v1.10.1"


def test_parse_infotext_without_parameter_line_has_no_params():
    assert webui_client.parse_infotext("just a prompt")["params"] == {}


def test_lora_hashes_split_by_name():
    assert webui_client.parse_lora_hashes("glasses-2: e68952afd3de, other: 0123456789ab") == {
        "glasses-2": "e68952afd3de",
        "other": "0123456789ab",
    }
    assert webui_client.parse_lora_hashes(None) == {}


def test_infotext_matching_the_request_has_no_problems():
    parsed = webui_client.parse_infotext(INFOTEXT)
    assert (
        webui_client.infotext_problems(parsed, {**EXPECT, "lora": "glasses-2", "lora_hash": "e68952afd3de99"})
        == []
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sampler": "Euler"}, "Sampler: DPM++ SDE (wanted Euler)"),
        ({"scheduler": "Exponential"}, "Schedule type: Karras (wanted Exponential)"),
        ({"sha256": "ffffffffff" + "0" * 54}, "Model hash: 3ba83964c7 (wanted ffffffffff)"),
        ({"width": 512}, "Size: 256x256 (wanted 512x256)"),
        ({"lora": "missing-lora"}, "no Lora hashes entry for missing-lora"),
        ({"lora": "glasses-2", "lora_hash": "aaaaaaaaaaaa"}, "glasses-2: e68952afd3de (pinned aaaaaaaaaaaa)"),
    ],
)
def test_infotext_problems_name_the_difference(change, needle):
    problems = webui_client.infotext_problems(webui_client.parse_infotext(INFOTEXT), {**EXPECT, **change})
    assert any(needle in p for p in problems), problems


def test_infotext_without_scheduler_key_is_a_problem():
    text = INFOTEXT.replace("Schedule type: Karras, ", "")
    problems = webui_client.infotext_problems(webui_client.parse_infotext(text), EXPECT)
    assert problems == ["the infotext has no 'Schedule type' (wanted Karras)"]


def test_png_text_chunks_and_size():
    data = fake_webui_api.png_bytes(16, 8, "hello\nSteps: 8, Sampler: Euler, Seed: 1")
    assert webui_client.png_size(data) == (16, 8)
    assert webui_client.png_text_chunks(data)["parameters"].startswith("hello\nSteps: 8")


def test_png_itxt_compressed_chunk():
    import zlib

    body = b"parameters\0\x01\x00\0\0" + zlib.compress("ünïcode, Steps: 1".encode())
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + b"\0\0\0\0"
    data = webui_client.PNG_SIGNATURE + chunk
    assert webui_client.png_text_chunks(data) == {"parameters": "ünïcode, Steps: 1"}


def test_png_rejects_non_png():
    with pytest.raises(webui_client.LiveError, match="not a PNG"):
        webui_client.png_text_chunks(b"<html>")


def test_checkpoint_hash_problem():
    sha = "1a17bcd93dc12034b4b8e6b2787f34a7ca250fb3344cb036768d3525745adb8c"
    assert webui_client.checkpoint_hash_problem({"sha256": sha, "hash": sha[:10]}, sha) is None
    assert webui_client.checkpoint_hash_problem({"sha256": None, "hash": sha[:10]}, sha) is None
    assert "not the pinned" in webui_client.checkpoint_hash_problem({"sha256": "0" * 64}, sha)
    assert "no hash" in webui_client.checkpoint_hash_problem({"sha256": None, "hash": None}, sha)


def test_find_checkpoint_by_basename():
    models = [
        {"filename": "/h/m/Stable-diffusion/a.safetensors"},
        {"filename": "/h/m/Stable-diffusion/b.safetensors"},
    ]
    assert webui_client.find_checkpoint(models, "b.safetensors") is models[1]
    assert webui_client.find_checkpoint(models, "c.safetensors") is None


def test_sandbox_profile_denies_network_but_loopback():
    lines = webui_client.sandbox_profile().splitlines()
    assert lines[0] == "(version 1)"
    assert "(allow default)" in lines
    # Later rules win in SBPL: the blanket deny comes before the loopback exceptions.
    deny = lines.index("(deny network*)")
    allows = [i for i, line in enumerate(lines) if line.startswith("(allow network")]
    assert allows and all(i > deny for i in allows)
    for line in lines[deny + 1 :]:
        if " ip " in line:
            assert '"localhost:*"' in line, line
    assert lines.count("(") == 0 and all(line.count("(") == line.count(")") for line in lines)


def test_verify_args_keep_the_api_on_loopback_and_add_cpu_flags_only_without_gpu():
    spec = {"cpu_only": False}
    # --nowebui without --server-name listens on every interface in v1.10.1 (uvicorn gets host None).
    assert webui_client.verify_args(spec, 1234) == [
        "--api", "--nowebui", "--port", "1234", "--server-name", "127.0.0.1",
    ]  # fmt: skip
    assert webui_client.verify_args({**spec, "cpu_only": True}, 1)[-3:] == ["--use-cpu", "all", "--no-half"]


def test_server_argv_is_webui_sh_and_wraps_the_sandbox():
    assert webui_client.server_argv({}) == ["bash", "webui.sh"]
    sandboxed = webui_client.server_argv({"offline": "sandbox"})
    assert sandboxed[:3] == ["sandbox-exec", "-p", webui_client.sandbox_profile()]
    assert sandboxed[3:] == ["bash", "webui.sh"]


# A process group shaped like webui.sh -> launch.py: a bash that dies at once on SIGTERM, and under it a
# python that shuts down in its own time (v1.10.1's uvicorn takes ~2 s) or ignores SIGTERM altogether.
GRACEFUL_CHILD = """
import signal, sys, time
def stop(*_):
    time.sleep(1.0)
    open(sys.argv[1], "w").write("finished")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if sys.argv[2] == "graceful" else signal.SIG_IGN)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(0.1)
"""


def start_group(tmp_path, behaviour):
    import subprocess
    import time

    marker = tmp_path / "marker"
    child = tmp_path / "child.py"
    child.write_text(GRACEFUL_CHILD)
    proc = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" "{child}" "{marker}" {behaviour}; true'], start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "marker.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, marker


def test_stop_server_waits_for_the_whole_group_not_just_webui_sh(tmp_path):
    proc, marker = start_group(tmp_path, "graceful")
    ok, detail = webui_client.stop_server(proc, grace=20)
    # The WebUI's python finished its shutdown (it was not killed when bash exited) and nothing is left.
    assert ok and "stopped by SIGTERM" in detail, detail
    assert marker.read_text() == "finished"
    assert not webui_client.group_alive(proc.pid)


def test_stop_server_kills_and_fails_a_webui_that_ignores_sigterm(tmp_path):
    proc, marker = start_group(tmp_path, "ignore")
    ok, detail = webui_client.stop_server(proc, grace=2)
    assert not ok and detail == "still running 2 s after SIGTERM: killed", detail
    assert not marker.exists() and not webui_client.group_alive(proc.pid)


def test_start_server_names_a_webui_user_sh_that_cannot_pass_verifys_flags(tmp_path):
    spec = {"user": "nobody", "webui_dir": str(tmp_path)}  # any account but root; nothing is started
    with pytest.raises(
        webui_client.LiveError, match=r"webui-user.sh \(No such file or directory\): run make provision"
    ):
        webui_client.start_server(spec, 1, str(tmp_path / "log"))
    (tmp_path / "webui-user.sh").write_text('export COMMANDLINE_ARGS="--api"\n')
    with pytest.raises(
        webui_client.LiveError, match=r"written by an older version of the toolkit .*run make provision"
    ):
        webui_client.start_server(spec, 1, str(tmp_path / "log"))
    assert not (tmp_path / "log").exists(), (
        "nothing may start before webui-user.sh is known to pass the flags"
    )


def test_parse_net_dev():
    text = (
        "Inter-|   Receive\n face |bytes    packets\n"
        "    lo:       0       0    0    0    0     0          0         0\n"
        "  eth0: 123 4 0 0 0 0 0 0\n"
    )
    assert webui_client.parse_net_dev(text) == ["eth0", "lo"]


def test_probe_refused_on_closed_loopback_port():
    port = webui_client.free_loopback_port()
    assert webui_client.probe("127.0.0.1", port) == "refused"


# --- Against the FAKE API, in process -----------------------------------------------------------------------


@pytest.fixture
def fake_api(tmp_path):
    """The fake server on 127.0.0.1:<free port> over a tmp WebUI tree with one checkpoint and one LoRA."""
    checkpoints = tmp_path / "models" / "Stable-diffusion"
    loras = tmp_path / "models" / "Lora"
    checkpoints.mkdir(parents=True)
    loras.mkdir(parents=True)
    (checkpoints / "ckpt.safetensors").write_bytes(safetensors_bytes(b"checkpoint"))
    (loras / "glasses-test.safetensors").write_bytes(safetensors_bytes(b"lora data"))
    app = fake_webui_api.FakeWebUI(str(tmp_path / "models"))
    server = fake_webui_api.ThreadingHTTPServer(("127.0.0.1", 0), fake_webui_api.make_handler(app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def safetensors_bytes(payload):
    header = json.dumps(
        {"x": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + payload


def spec_for(tree):
    import hashlib

    sha = hashlib.sha256((tree / "models/Stable-diffusion/ckpt.safetensors").read_bytes()).hexdigest()
    return {
        "checkpoint": {"file": "ckpt.safetensors", "sha256": sha},
        "lora": {"name": "glasses-test", "trigger": "glasses"},
        "sampler": "DPM++ SDE",
        "scheduler": "Karras",
        "prompt": "1woman",
        "image": {"width": 64, "height": 32, "steps": 4, "seed": 1234},
    }


def run_checks(url, spec, out_dir):
    client = webui_client.WebUIClient(url)
    checks, images = webui_client.Checks(), []
    webui_client.live_checks(client, checks, spec, images, str(out_dir))
    return {c["name"]: c for c in checks.items}, images


def test_live_checks_pass_against_the_fake(fake_api, tmp_path):
    tree, url = fake_api
    checks, images = run_checks(url, spec_for(tree), tmp_path)
    assert all(c["ok"] for c in checks.values()), checks
    assert set(checks) == {
        "sd-models lists ckpt.safetensors",
        "samplers include DPM++ SDE",
        "schedulers include Karras",
        "loras include glasses-test",
        "txt2img 1woman",
        "sd-models hash of ckpt.safetensors",
        "txt2img with LoRA",
    }
    assert [Path(i["path"]).name for i in images] == ["txt2img-1woman.png", "txt2img-with-LoRA.png"]
    assert webui_client.png_size(base64.b64decode(images[0]["png"])) == (64, 32)


def test_missing_lora_fails_the_lora_checks(fake_api, tmp_path):
    tree, url = fake_api
    (tree / "models/Lora/glasses-test.safetensors").unlink()
    checks, _ = run_checks(url, spec_for(tree), tmp_path)
    assert not checks["loras include glasses-test"]["ok"]
    assert not checks["txt2img with LoRA"]["ok"]
    assert "no Lora hashes entry for glasses-test" in checks["txt2img with LoRA"]["detail"]
    assert checks["txt2img 1woman"]["ok"]


def test_unknown_sampler_falls_back_and_is_caught(fake_api, tmp_path):
    tree, url = fake_api
    spec = {**spec_for(tree), "sampler": "DPM++ SDE Turbo"}
    checks, _ = run_checks(url, spec, tmp_path)
    assert not checks["samplers include DPM++ SDE Turbo"]["ok"]
    assert "Sampler: DPM++ 2M (wanted DPM++ SDE Turbo)" in checks["txt2img 1woman"]["detail"]


def test_wrong_pinned_hash_fails_the_hash_check(fake_api, tmp_path):
    tree, url = fake_api
    spec = spec_for(tree)
    spec["checkpoint"]["sha256"] = "0" * 64
    checks, _ = run_checks(url, spec, tmp_path)
    assert not checks["sd-models hash of ckpt.safetensors"]["ok"]
    assert "Model hash" in checks["txt2img 1woman"]["detail"]


def test_wait_ready_reports_a_dead_process():
    client = webui_client.WebUIClient(f"http://127.0.0.1:{webui_client.free_loopback_port()}")
    with pytest.raises(webui_client.LiveError, match="exited before its API answered"):
        client.wait_ready(deadline=float("inf"), alive=lambda: False)


def test_the_network_cut_row_names_the_app_whose_server_it_looked_at(monkeypatch, tmp_path):
    """ComfyUI's live run said "interfaces seen by the WebUI" (the real lane's report): its row names ComfyUI."""
    import comfyui_client

    facts = {"interfaces": ["lo"], "netns": "net:[2]", "host_netns": "net:[1]"}
    monkeypatch.setattr(webui_client, "netns_facts", lambda pid, host: dict(facts))
    monkeypatch.setattr(webui_client, "bring_loopback_up", lambda: None)

    class Proc:
        pid = 1

        def poll(self):
            return None

    monkeypatch.setattr(webui_client, "start_as_user", lambda *a, **k: Proc())
    monkeypatch.setattr(webui_client, "stop_server", lambda proc, grace: (True, "stopped"))
    monkeypatch.setattr(comfyui_client, "wait_ready", lambda *a, **k: None)

    def no_api(*_):
        raise comfyui_client.ComfyError("no API in this test")

    monkeypatch.setattr(comfyui_client.ComfyClient, "checkpoints", no_api)
    spec = {"offline": "netns", "out_dir": str(tmp_path), "python": "python3", "comfyui_dir": str(tmp_path),
            "checkpoint": "x.safetensors", "prompt": "p", "image": {"width": 8, "height": 8, "steps": 1, "seed": 1}}  # fmt: skip
    rows = {row["name"]: row for row in comfyui_client.run_live(spec)["checks"]}
    assert rows["network cut"]["ok"]
    assert rows["network cut"]["detail"].startswith("interfaces seen by ComfyUI: lo; own network namespace")
    checks = webui_client.Checks()
    webui_client.check_cut({"offline": "netns"}, Proc(), checks, {})
    assert checks.items[0]["detail"].startswith("interfaces seen by the WebUI: lo")
