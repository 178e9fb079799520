"""pickle_scan: globals found without unpickling; dangerous and unknown imports refused."""

import collections
import io
import pickle
import zipfile

import pickle_scan as ps
import pytest


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _zip_ckpt(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/data/0", b"\0" * 16)
        archive.writestr("archive/version", b"3\n")


def _pickles(obj):
    return [pickle.dumps(obj, protocol=p) for p in (0, 2, 4, 5)]


@pytest.mark.parametrize("payload", _pickles(collections.OrderedDict(a=1)))
def test_safe_checkpoint_passes(tmp_path, payload):
    path = tmp_path / "ok.ckpt"
    _zip_ckpt(path, payload)
    assert ps.checkpoint_globals(path) == {("collections", "OrderedDict")}
    assert ps.check_checkpoint(path) is True


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize(
    ("func", "label"),
    [
        # Protocols 0-2 write Python 2 names (__builtin__.eval, commands.call): both must be caught.
        (__import__("os").system, ("posix.system", "os.system")),
        (eval, ("builtins.eval", "__builtin__.eval")),
        (exec, ("builtins.exec", "__builtin__.exec")),
        (__import__("subprocess").call, ("subprocess.call", "commands.call")),
    ],
)
def test_dangerous_imports_are_refused(tmp_path, protocol, func, label):
    path = tmp_path / "evil.ckpt"
    payload = pickle.dumps(
        {"state_dict": collections.OrderedDict(), "x": _Evil(func, "true")}, protocol=protocol
    )
    _zip_ckpt(path, payload)
    with pytest.raises(ps.PickleScanError, match="can run code") as exc:
        ps.check_checkpoint(path)
    assert any(name in str(exc.value) for name in label)


def test_unknown_import_is_refused(tmp_path):
    path = tmp_path / "odd.ckpt"
    _zip_ckpt(path, pickle.dumps(_Evil(collections.Counter, "abc"), protocol=4))
    with pytest.raises(ps.PickleScanError, match=r"collections.Counter, which a checkpoint does not need"):
        ps.check_checkpoint(path)


def test_legacy_raw_pickle_followed_by_storage_bytes(tmp_path):
    path = tmp_path / "legacy.ckpt"
    stream = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, stream, protocol=2)  # torch's legacy magic number
    pickle.dump({"protocol_version": 1001}, stream, protocol=2)
    pickle.dump(_Evil(__import__("os").system, "id"), stream, protocol=2)
    stream.write(b"\x00\xff" * 1000)  # raw storage data follows the pickles
    path.write_bytes(stream.getvalue())
    with pytest.raises(ps.PickleScanError, match="can run code"):
        ps.check_checkpoint(path)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"\xff\xfe not a pickle at all")
    with pytest.raises(ps.PickleScanError, match="not a pickle file"):
        ps.check_checkpoint(path)


def test_zip_without_pickle(tmp_path):
    path = tmp_path / "empty.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(ps.PickleScanError, match="no pickle inside"):
        ps.check_checkpoint(path)


def test_torch_storages_are_safe():
    dangerous, unknown = ps.classify(
        {("torch", "HalfStorage"), ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}
    )
    assert dangerous == [] and unknown == []


def test_memoized_names_are_followed():
    # Protocol 4 memoizes module and attribute strings; a second use of os.system comes from the memo.
    payload = pickle.dumps(
        [_Evil(__import__("os").system, "a"), _Evil(__import__("os").system, "b")], protocol=4
    )
    found = ps.pickle_globals(payload)
    assert any(name == "system" for _module, name in found)


def test_stack_global_from_untraceable_operands_is_refused():
    # STACK_GLOBAL whose operands are not plain strings pushed just before: refuse as unknown.
    payload = b"\x80\x04" + b"\x8c\x02os" + b"\x94" + b")" + b"\x93" + b"."
    found = ps.pickle_globals(payload)
    assert ("?", "?") in found
    assert ps.classify(found)[1] == ["?.?"]
