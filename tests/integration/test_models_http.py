"""model_file's download logic against a real local HTTP server (127.0.0.1, port 0, threaded).

Every network behaviour of issue 5 is exercised here with real sockets: Range resume, a server that
ignores Range, 416, a cross-host redirect (127.0.0.1 -> localhost) that must not carry Authorization,
an expired presigned URL, a connection cut mid-body, kill -9 mid-download, and each bad input with its
sentence. The role-level run through ansible-playbook is in test_models_role.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import model_download as md
import pytest
from model_fixtures import ModelServer, random_safetensors, sha256_hex

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = ROOT / "roles" / "models" / "module_utils"
SHARED_MODULE_UTILS = ROOT / "plugins" / "module_utils"  # sdenv_atomic, shared by every role


@pytest.fixture
def server():
    with ModelServer() as srv:
        yield srv


@pytest.fixture
def model():
    blob = random_safetensors(3 * 1024 * 1024 + 17, seed=5)
    return blob, sha256_hex(blob)


@pytest.fixture
def dest_dir(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


def spec(dest_dir, urls, sha, tmp_path, **kw):
    return md.Spec(
        dest=str(dest_dir / kw.pop("filename", "m.safetensors")),
        urls=urls,
        sha256=sha,
        stat_cache=str(tmp_path / "state" / "stat-cache.json"),
        timeout=10,
        **kw,
    )


def failure(s):
    with pytest.raises(md.ModelFileError) as exc:
        md.install(s)
    return str(exc.value)


def nothing_installed(dest_dir, name="m.safetensors"):
    return not (dest_dir / name).exists()


# --- resume and restart ---------------------------------------------------------------------------------


def test_resume_with_range_sends_only_the_remainder(server, model, dest_dir, tmp_path):
    blob, sha = model
    url = server.add("/m", data=blob)
    part = 1_000_003
    (dest_dir / "m.safetensors.part").write_bytes(blob[:part])
    result = md.install(spec(dest_dir, [url], sha, tmp_path, size=len(blob)))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    (request,) = server.requests_to("/m")
    assert request["range"] == f"bytes={part}-" and request["status"] == 206
    assert request["sent"] == len(blob) - part
    assert result["resumed_from"] == part and result["bytes_downloaded"] == len(blob) - part


def test_server_ignoring_range_restarts_cleanly(server, model, dest_dir, tmp_path):
    blob, sha = model
    url = server.add("/m", data=blob, ranges=False)
    (dest_dir / "m.safetensors.part").write_bytes(b"garbage" * 1000)
    result = md.install(spec(dest_dir, [url], sha, tmp_path))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    (request,) = server.requests_to("/m")
    assert request["range"] == "bytes=7000-" and request["status"] == 200
    assert result["resumed_from"] == 0 and result["bytes_downloaded"] == len(blob)


def test_416_with_a_complete_part_installs_it_without_body(server, model, dest_dir, tmp_path):
    blob, sha = model
    url = server.add("/m", data=blob)
    (dest_dir / "m.safetensors.part").write_bytes(blob)
    result = md.install(spec(dest_dir, [url], sha, tmp_path))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    assert [r["status"] for r in server.requests_to("/m")] == [416]
    assert server.body_bytes("/m") == 0 and result["bytes_downloaded"] == 0


def test_416_with_a_part_longer_than_the_file_starts_over(server, model, dest_dir, tmp_path):
    blob, sha = model
    url = server.add("/m", data=blob)
    (dest_dir / "m.safetensors.part").write_bytes(blob + b"extra")
    md.install(spec(dest_dir, [url], sha, tmp_path))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    assert [(r["status"], r["range"]) for r in server.requests_to("/m")] == [
        (416, f"bytes={len(blob) + 5}-"),
        (200, None),
    ]


def test_connection_cut_mid_body_resumes_where_it_stopped(server, model, dest_dir, tmp_path):
    blob, sha = model
    cut = 1_500_000
    url = server.add("/m", data=blob, cut_after=cut)
    result = md.install(spec(dest_dir, [url], sha, tmp_path))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    first, second = server.requests_to("/m")
    assert first["sent"] == cut and second["range"] == f"bytes={cut}-"
    assert server.body_bytes("/m") == len(blob)  # nothing was sent twice
    assert result["resumed_from"] == cut


def test_connection_cut_every_time_says_so_and_keeps_the_part(server, model, dest_dir, tmp_path, monkeypatch):
    blob, sha = model
    monkeypatch.setattr(md.time, "sleep", lambda s: None)
    url = server.add("/m", data=blob, cut_after=100_000, cut_times=99)
    message = failure(spec(dest_dir, [url], sha, tmp_path))
    assert "stopped at" in message and f"of {len(blob)} bytes" in message
    assert "partial file is kept: run again to resume" in message
    assert nothing_installed(dest_dir)
    assert (dest_dir / "m.safetensors.part").stat().st_size == (md.RETRIES_PER_SOURCE + 1) * 100_000


# --- redirects, tokens, presigned URLs ------------------------------------------------------------------


def test_cross_host_redirect_does_not_forward_authorization(server, model, dest_dir, tmp_path):
    blob, sha = model
    storage = server.add("/storage/m", data=blob)
    url = server.add("/api/download/1", token="s3cret", redirect=storage.replace("127.0.0.1", "localhost"))
    md.install(
        spec(
            dest_dir,
            [url],
            sha,
            tmp_path,
            token="s3cret",
            token_env="CIVITAI_TOKEN",
            token_hosts=[server.origin()],
        )
    )
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    (api,) = server.requests_to("/api/download/1")
    (obj,) = server.requests_to("/storage/m")
    assert api["authorization"] == "Bearer s3cret" and api["host"].startswith("127.0.0.1:")
    assert obj["host"].startswith("localhost:") and obj["authorization"] is None


def test_same_host_redirect_keeps_authorization(server, model, dest_dir, tmp_path):
    blob, sha = model
    server.add("/final", data=blob, token="t")
    url = server.add("/start", token="t", redirect="/final")
    md.install(spec(dest_dir, [url], sha, tmp_path, token="t", token_hosts=[server.origin()]))
    assert server.requests_to("/final")[0]["authorization"] == "Bearer t"


def test_expired_presigned_url_asks_the_original_again(server, model, dest_dir, tmp_path):
    blob, sha = model
    server.add_storage("/bucket/m", data=blob)
    url = server.add("/api/download/2", token="t", presign="/bucket/m", expire_first=1)
    md.install(spec(dest_dir, [url], sha, tmp_path, token="t", token_hosts=[server.origin()]))
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    assert len(server.requests_to("/api/download/2")) == 2
    assert [r["status"] for r in server.requests_to("/bucket/m")] == [403, 200]


def test_presigned_url_cut_mid_body_resumes_through_a_fresh_signature(server, model, dest_dir, tmp_path):
    blob, sha = model
    server.add_storage("/bucket/m", data=blob, cut_after=2_000_000)
    url = server.add("/api/download/3", token="t", presign="/bucket/m")
    md.install(spec(dest_dir, [url], sha, tmp_path, token="t", token_hosts=[server.origin()]))
    first, second = server.requests_to("/bucket/m")
    assert first["query"] != second["query"]  # a new signature, from the original URL
    assert second["range"] == "bytes=2000000-" and server.body_bytes("/bucket/m") == len(blob)
    assert all(r["authorization"] is None for r in server.requests_to("/bucket/m"))


def test_the_token_reaches_only_the_allowed_host_not_a_mirror(server, model, dest_dir, tmp_path):
    # Issue 19 item 5: two loopback host names on one server, the allow-list naming 127.0.0.1 only. The
    # mirror (localhost) is tried first and fails; the allowed host then serves the file.
    blob, sha = model
    mirror = server.add("/mirror/m.safetensors", status=404, body=b"{}", content_type="application/json")
    mirror = mirror.replace("127.0.0.1", "localhost")
    allowed = server.add("/api/download/9", token="s3cret", data=blob)
    s = spec(dest_dir, [mirror, allowed], sha, tmp_path, token="s3cret", token_hosts=[server.origin()])
    md.install(s)
    assert (dest_dir / "m.safetensors").read_bytes() == blob
    seen = [(r["host"].split(":")[0], r["authorization"]) for r in server.requests]
    assert seen == [("localhost", None), ("127.0.0.1", "Bearer s3cret")]


def test_a_host_not_on_the_allow_list_never_gets_the_token(server, model, dest_dir, tmp_path):
    # The reverse: the allow-list names localhost; the URL's host is 127.0.0.1 (the same socket).
    _blob, sha = model
    url = server.add("/api/download/10", token="s3cret")
    s = spec(dest_dir, [url], sha, tmp_path, token="s3cret", token_env="CIVITAI_TOKEN",
             token_hosts=[server.origin("localhost")])  # fmt: skip
    message = failure(s)
    assert [r["authorization"] for r in server.requests] == [None]
    assert (
        f"the token in CIVITAI_TOKEN is sent only to http://localhost:{server.port} (the hosts"
        f" sdenv_models_token_hosts allows for it), not to http://127.0.0.1:{server.port}"
    ) in message
    assert "s3cret" not in message


# --- bad input: one sentence each, nothing at the final path --------------------------------------------


def test_html_page_names_the_token_variable(server, model, dest_dir, tmp_path):
    _blob, sha = model
    login = server.add("/login", data=b"<!DOCTYPE html><html>Sign in</html>", content_type="text/html")
    url = server.add("/api/download/4", redirect=login)
    message = failure(spec(dest_dir, [url], sha, tmp_path, token_env="CIVITAI_TOKEN"))
    assert message.startswith("the server sent a web page, not a model")
    assert "Civitai needs a token in the variable named by token_env (CIVITAI_TOKEN)" in message
    assert nothing_installed(dest_dir) and not (dest_dir / "m.safetensors.part").exists()


def test_html_body_sent_as_octet_stream_is_recognised(server, model, dest_dir, tmp_path):
    _blob, sha = model
    url = server.add("/x", data=b"\n  <!doctype html><html><body>Login</body></html>" + b" " * 600)
    message = failure(spec(dest_dir, [url], sha, tmp_path, token_env="CIVITAI_TOKEN"))
    assert message.startswith("the server sent a web page, not a model")
    assert nothing_installed(dest_dir) and not (dest_dir / "m.safetensors.part").exists()


def test_json_401(server, model, dest_dir, tmp_path):
    _blob, sha = model
    url = server.add("/api/download/5", token="right")
    message = failure(spec(dest_dir, [url], sha, tmp_path, token_env="CIVITAI_TOKEN"))
    assert "refused m.safetensors with HTTP 401 (a JSON message (error: Unauthorized))" in message
    assert "CIVITAI_TOKEN" in message and nothing_installed(dest_dir)
    message = failure(
        spec(
            dest_dir,
            [url],
            sha,
            tmp_path,
            token="wrong",
            token_env="CIVITAI_TOKEN",
            token_hosts=[server.origin()],
        )
    )
    assert "the token in CIVITAI_TOKEN was refused" in message
    assert "wrong" not in message


def test_json_403_body(server, model, dest_dir, tmp_path):
    _blob, sha = model
    url = server.add(
        "/f",
        status=403,
        body=b'{"error":"Forbidden","message":"early access"}',
        content_type="application/json",
    )
    message = failure(spec(dest_dir, [url], sha, tmp_path))
    assert "HTTP 403 (a JSON message (error: Forbidden))" in message and nothing_installed(dest_dir)


def test_git_lfs_pointer(server, model, dest_dir, tmp_path):
    _blob, sha = model
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + sha.encode() + b"\nsize 3145745\n"
    url = server.add("/raw/m.safetensors", data=pointer)
    message = failure(spec(dest_dir, [url], sha, tmp_path))
    assert "sent a Git LFS pointer file" in message and "resolve/" in message
    assert nothing_installed(dest_dir)


def test_truncated_body_without_length_is_caught_by_the_pinned_size(
    server, model, dest_dir, tmp_path, monkeypatch
):
    blob, sha = model
    monkeypatch.setattr(md.time, "sleep", lambda s: None)
    url = server.add("/m", data=blob[: len(blob) // 2], length=False)
    message = failure(spec(dest_dir, [url], sha, tmp_path, size=len(blob)))
    # The body ended early (no length to compare with): the resume asks for the rest and learns the size.
    assert [r["range"] for r in server.requests_to("/m")] == [None, f"bytes={len(blob) // 2}-"]
    assert f"has {len(blob) // 2} bytes of m.safetensors but the lock pins {len(blob)} bytes" in message
    assert "truncated" in message and nothing_installed(dest_dir)
    assert not (dest_dir / "m.safetensors.part").exists()


def test_wrong_hash_names_both_and_keeps_the_file_aside(server, model, dest_dir, tmp_path):
    blob, _sha = model
    url = server.add("/m", data=blob)
    pinned = "f" * 64
    message = failure(spec(dest_dir, [url], pinned, tmp_path))
    assert f"has SHA256 {sha256_hex(blob)} but the lock pins {pinned}" in message
    rejected = tmp_path / "state" / "rejected" / "m.safetensors.rejected"
    assert f"it was kept at {rejected} (readable by root only) for inspection" in message
    assert rejected.read_bytes() == blob and nothing_installed(dest_dir) and list(dest_dir.iterdir()) == []


def test_header_too_large(server, dest_dir, tmp_path):
    body = (200_000_000).to_bytes(8, "little") + os.urandom(4096)
    url = server.add("/m", data=body)
    message = failure(spec(dest_dir, [url], sha256_hex(body), tmp_path))
    assert "more than the safetensors limit of 100000000 bytes" in message and nothing_installed(dest_dir)


def test_bad_offsets(server, dest_dir, tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,20]}}'
    body = len(header).to_bytes(8, "little") + header + bytes(20)
    url = server.add("/m", data=body)
    message = failure(spec(dest_dir, [url], sha256_hex(body), tmp_path))
    assert "tensor 'w' spans 20 bytes but shape [4] of F32 needs 16" in message and nothing_installed(
        dest_dir
    )


def test_unreachable_hosts_name_the_alternatives(model, dest_dir, tmp_path):
    _blob, sha = model
    message = failure(
        spec(dest_dir, ["http://127.0.0.1:9/m", "https://no-such-host.invalid/m"], sha, tmp_path)
    )
    assert "could not reach 127.0.0.1 (Connection refused)" in message
    assert "could not reach no-such-host.invalid" in message
    assert "mirror URL or a local bundle directory" in message and nothing_installed(dest_dir)


def test_http_404(server, model, dest_dir, tmp_path):
    _blob, sha = model
    message = failure(spec(dest_dir, [server.url("/nothing")], sha, tmp_path))
    assert "has no m.safetensors (HTTP 404)" in message


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_not_enough_space_is_checked_before_starting(server, model, small_disk, tmp_path):
    blob, sha = model
    url = server.add("/m", data=blob)
    message = failure(spec(small_disk, [url, url], sha, tmp_path))
    assert message.startswith(f"not enough free space in {small_disk} for m.safetensors: it needs 4 MB more")
    # Refused before writing a byte, and the second source was not tried (it needs the same space).
    assert len(server.requests_to("/m")) == 1
    assert os.listdir(small_disk) == []


def test_disk_filling_up_mid_download(server, model, small_disk, tmp_path):
    blob, _sha = model
    url = server.add("/m", data=blob, length=False)  # no Content-Length: the pre-check cannot know
    message = failure(spec(small_disk, [url], sha256_hex(blob), tmp_path))
    assert f"the disk holding {small_disk} filled up while writing m.safetensors" in message
    assert os.listdir(small_disk) == []  # the partial download was removed to give the space back


# --- kill -9 mid-download, then resume ------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{utils!r}, {shared!r}]
    import model_download as md
    md.install(md.Spec(dest={dest!r}, urls=[{url!r}], sha256={sha!r}, stat_cache={cache!r},
                       progress_file={progress!r}))
    """
)


def test_kill_9_mid_download_then_resume_sends_only_the_remainder(server, dest_dir, tmp_path):
    blob = random_safetensors(4 * 1024 * 1024, seed=9)
    sha = sha256_hex(blob)
    url = server.add("/slow", data=blob, rate=2_000_000)
    dest = dest_dir / "m.safetensors"
    part = dest_dir / "m.safetensors.part"
    code = CHILD.format(
        utils=str(MODULE_UTILS),
        shared=str(SHARED_MODULE_UTILS),
        dest=str(dest),
        url=url,
        sha=sha,
        cache=str(tmp_path / "cache.json"),
        progress=str(tmp_path / "progress.json"),
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert child.poll() is None, "the download ended before it could be killed"
            assert time.monotonic() < deadline, "the download did not progress"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not dest.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(blob)
    server.routes["/slow"].rate = None
    result = md.install(spec(dest_dir, [url], sha, tmp_path))
    resume = server.requests_to("/slow")[-1]
    assert resume["range"] == f"bytes={kept}-"
    assert resume["sent"] == len(blob) - kept
    assert result["resumed_from"] == kept and dest.read_bytes() == blob
