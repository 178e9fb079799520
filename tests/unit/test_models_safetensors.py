"""safetensors_check: the structural rules of the format, and naming what arrives instead of a model."""

import json
import struct

import pytest
import safetensors_check as st
from model_fixtures import random_safetensors, safetensors_bytes


def _raw(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _parse(blob):
    return st.parse_header(blob, len(blob))


def test_valid_file_with_metadata_and_padding():
    blob = safetensors_bytes(
        {"a": ("F32", (2, 3), None), "b": ("F16", (4,), None), "c": ("U8", (0,), b"")},
        metadata={"format": "pt", "ss_network_dim": "32"},
    )
    info = _parse(blob)
    assert info["tensors"] == 3
    assert info["data_bytes"] == 2 * 3 * 4 + 4 * 2
    assert info["metadata"] == {"format": "pt", "ss_network_dim": "32"}


def test_header_is_space_padded_json():
    blob = safetensors_bytes({"a": ("U8", (3,), b"xyz")}, pad_to=64)
    assert blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]].endswith(b" ")
    assert _parse(blob)["tensors"] == 1


def test_check_file_reads_from_disk(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(random_safetensors(1000))
    assert st.check_file(path)["data_bytes"] == 1000


def test_header_too_large_is_refused():
    blob = struct.pack("<Q", st.MAX_HEADER_BYTES + 1) + b"\0" * 64
    with pytest.raises(st.SafetensorsError, match="more than the safetensors limit"):
        _parse(blob)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<!DOCTYPE html><html><body>Log in</body></html>", "web page"),
        (b"  <html><head></head></html>", "web page"),
        (b'{"error":"Unauthorized","message":"token required"}', "JSON message (error: Unauthorized)"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
            "Git LFS pointer",
        ),
    ],
)
def test_non_models_are_named(body, what):
    assert what in st.describe_non_model(body)
    with pytest.raises(st.SafetensorsError, match="not a safetensors model") as exc:
        _parse(body + b" " * 64)
    assert what.split(" (")[0] in str(exc.value)


def test_real_model_is_not_called_a_web_page():
    assert st.describe_non_model(random_safetensors(100)[:512]) is None


def test_header_claims_more_than_the_file():
    blob = struct.pack("<Q", 500) + b"{}"
    with pytest.raises(st.SafetensorsError, match="header claims 500 bytes but the file has only"):
        _parse(blob)


def test_header_not_json():
    raw = b"{not json"
    with pytest.raises(st.SafetensorsError, match="not valid UTF-8 JSON"):
        _parse(struct.pack("<Q", len(raw)) + raw)


def test_header_not_an_object():
    with pytest.raises(st.SafetensorsError, match="not an object"):
        _parse(_raw([1, 2]))


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8"),
        ({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unknown dtype"),
        ({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\0", "invalid shape"),
        ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}}, b"\0", "invalid data_offsets"),
        ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}, b"\0", "ends"),
        ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\0\0", "hole before tensor 'a'"),
        (
            {
                "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
            },
            b"\0" * 3,
            "overlaps",
        ),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 5, "end at byte"),
        ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 2, "end at byte"),
        ({"a": "x"}, b"", "no description"),
        ({"__metadata__": {"k": 1}}, b"", "__metadata__ is not a map of strings"),
        ({"__metadata__": ["k"]}, b"", "__metadata__ is not a map of strings"),
        ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\0", "invalid shape"),
    ],
)
def test_bad_structures_are_refused(header, data, message):
    with pytest.raises(st.SafetensorsError, match=message):
        _parse(_raw(header, data))


def test_too_short():
    with pytest.raises(st.SafetensorsError, match="too short"):
        _parse(b"\1\0")


def test_every_dtype_size_matches_the_reference():
    # Sizes of the safetensors reference implementation (Dtype::size).
    assert st.DTYPE_SIZES["BF16"] == 2
    assert st.DTYPE_SIZES["F64"] == 8
    assert st.DTYPE_SIZES["BOOL"] == 1
    assert st.DTYPE_SIZES["F8_E4M3"] == 1


def test_data_offset():
    blob = safetensors_bytes({"a": ("U8", (1,), b"z")})
    assert st.data_offset(blob[:8]) == len(blob) - 1
    assert st.data_offset(b"\0") is None
