"""sdenv_pipeline: every byte hashed and written once, in order, with O_DIRECT or through the page cache."""

import hashlib
import os

import pytest
import sdenv_pipeline as sp


def _pump(pipe, data):
    """Feed `data` through the pipeline as a receiver would: fill each buffer take() gives."""
    pos = 0
    while pos < len(data):
        view = pipe.take()
        n = min(len(view), len(data) - pos)
        view[:n] = data[pos : pos + n]
        pipe.give(n)
        pos += n


def _open(path):
    return os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)


@pytest.mark.parametrize("cpus", [1, 2])
@pytest.mark.parametrize("offset", [0, 1000, sp.CHUNK])
def test_every_byte_is_hashed_and_written_in_order(tmp_path, monkeypatch, cpus, offset):
    monkeypatch.setattr(sp, "cpus", lambda: cpus)
    data = os.urandom(3 * sp.CHUNK + 12345)  # several buffers and a tail that is not whole blocks
    part = tmp_path / "m.part"
    part.write_bytes(data[:offset])  # a resumed download: the file already holds `offset` bytes
    hasher = hashlib.sha256(data[:offset])
    fd = _open(part)
    pipe = sp.HashWritePipeline(fd, str(part), offset, hasher)
    first = pipe.take()
    # After an unaligned start the first buffer only reaches the next 4 KiB boundary, so the rest can be
    # written with O_DIRECT.
    misaligned = offset % sp.ALIGN
    assert len(first) == (sp.ALIGN - misaligned if misaligned else sp.CHUNK)
    first[:] = data[offset : offset + len(first)]
    pipe.give(len(first))
    _pump(pipe, data[offset + len(first) :])
    pipe.close()
    os.close(fd)
    assert part.read_bytes() == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_without_a_hasher_it_only_writes(tmp_path):
    data = os.urandom(sp.CHUNK + 5)
    part = tmp_path / "m.part"
    fd = _open(part)
    pipe = sp.HashWritePipeline(fd, str(part))
    _pump(pipe, data)
    pipe.close()
    os.close(fd)
    assert part.read_bytes() == data


def test_falls_back_to_the_page_cache_when_o_direct_is_refused(tmp_path, monkeypatch):
    real = sp.write_all
    direct_calls = []

    def refusing(fd, view, offset=None):
        if pipe.direct_fd is not None and fd == pipe.direct_fd:
            direct_calls.append(offset)
            raise OSError(22, "Invalid argument")  # EINVAL, as a filesystem without O_DIRECT answers
        return real(fd, view, offset)

    monkeypatch.setattr(sp, "write_all", refusing)
    data = os.urandom(2 * sp.CHUNK + 77)
    part = tmp_path / "m.part"
    fd = _open(part)
    pipe = sp.HashWritePipeline(fd, str(part), 0, hashlib.sha256())
    if pipe.direct_fd is None:
        pytest.skip("this filesystem has no O_DIRECT, so there is nothing to refuse")
    _pump(pipe, data)
    pipe.close()
    os.close(fd)
    assert direct_calls == [0]  # refused once, then the page cache for the rest
    assert part.read_bytes() == data


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_write_error_reaches_the_caller(tmp_path, monkeypatch, cpus):
    def full(fd, view, offset=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sp, "write_all", full)
    monkeypatch.setattr(sp, "cpus", lambda: cpus)
    part = tmp_path / "m.part"
    fd = _open(part)
    pipe = sp.HashWritePipeline(fd, str(part), 0, hashlib.sha256())
    with pytest.raises(OSError) as err:
        try:
            _pump(pipe, os.urandom(sp.CHUNK * (sp.BUFFERS + 2)))
        finally:
            pipe.close()
    os.close(fd)
    assert err.value.errno == 28
