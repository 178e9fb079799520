# Scan the pickles inside a .ckpt for the globals they import, without unpickling anything.
#
# A .ckpt is a pickle (torch.save): loading it can run any code its GLOBAL/STACK_GLOBAL opcodes name.
# Like picklescan, this walks the opcodes with pickletools and collects (module, name) pairs. A checkpoint
# needs only a handful of torch/numpy/collections globals (the WebUI's own safe unpickler allows the same
# set); everything on the dangerous list is refused by name, anything else unknown is refused too, because
# an allow-list fails closed. Stdlib only: this runs on the target host.
from __future__ import annotations

import contextlib
import io
import pickletools
import zipfile

# (module, name) pairs a Stable Diffusion checkpoint legitimately imports; name "*" = any in that module.
SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch.nn.modules.container", "ParameterDict"),
    ("torch", "*Storage"),
    ("torch", "float32"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("_codecs", "encode"),
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("pytorch_lightning.callbacks.early_stopping", "EarlyStopping"),
    ("__builtin__", "set"),
    ("builtins", "set"),
}

# Modules and names that execute code or touch the system when called; named in the refusal.
DANGEROUS_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "socket",
    "shutil",
    "runpy",
    "importlib",
    "pty",
    "commands",
    "webbrowser",
    "requests",
    "urllib",
    "http",
    "ctypes",
    "pickle",
    "_pickle",
    "marshal",
    "code",
    "codeop",
    "pdb",
    "asyncio",
    "multiprocessing",
    "platform",
}
DANGEROUS_BUILTINS = {
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "__import__",
    "getattr",
    "globals",
    "input",
    "apply",
}

_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}


class PickleScanError(ValueError):
    """The checkpoint is refused; str(exc) is one sentence saying why."""


def pickle_globals(data):
    """The set of (module, name) a pickle stream imports; several concatenated pickles are all scanned."""
    found = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            _scan_one(stream, found)
        except (ValueError, EOFError, KeyError, IndexError):
            # Torch's legacy format follows its pickles with raw storage bytes: stop at the first
            # non-pickle data, but a stream that is not a pickle at all is an error.
            if start == 0:
                raise PickleScanError("it is not a pickle file, so it is no usable .ckpt") from None
            break
    return found


def _scan_one(stream, found):
    memo = {}
    strings = []  # recent string operands, for STACK_GLOBAL
    previous = None
    for opcode, arg, _pos in pickletools.genops(stream):
        name = opcode.name
        if name in _STRING_OPS:
            strings.append(arg if isinstance(arg, str) else str(arg))
        elif name in _MEMO_PUT:
            # Only a string just pushed is remembered as one; anything else memoized is not a name.
            key = len(memo) if name == "MEMOIZE" else arg
            memo[key] = strings[-1] if previous in _STRING_OPS or previous in _MEMO_GET else None
        elif name in _MEMO_GET:
            strings.append(memo.get(arg))
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add((module, attr))
        elif name == "STACK_GLOBAL":
            if len(strings) < 2 or strings[-2] is None or strings[-1] is None:
                # The operands were built in a way this scan cannot follow: refuse rather than guess.
                found.add(("?", "?"))
            else:
                found.add((strings[-2], strings[-1]))
        else:
            # Any other opcode builds something that is not a name: a later STACK_GLOBAL must not pair
            # two strings with it in between.
            strings.append(None)
        if name == "STOP":
            return
        previous = name


def classify(globals_found):
    """Split into (dangerous, unknown) sorted lists of 'module.name' strings."""
    dangerous, unknown = [], []
    for module, name in sorted(globals_found):
        label = f"{module}.{name}"
        top = module.split(".")[0]
        if top in DANGEROUS_MODULES or (top in ("builtins", "__builtin__") and name in DANGEROUS_BUILTINS):
            dangerous.append(label)
        elif not _is_safe(module, name):
            unknown.append(label)
    return dangerous, unknown


def _is_safe(module, name):
    if (module, name) in SAFE_GLOBALS:
        return True
    return module == "torch" and name.endswith("Storage") and name.isidentifier()


def checkpoint_globals(path):
    """All globals imported by the pickles in the .ckpt at `path` or in an open binary file (zip format or
    legacy raw pickle)."""
    if zipfile.is_zipfile(path):
        found = set()
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith(".pkl")]
            if not members:
                raise PickleScanError("it is a zip archive with no pickle inside, so it is no usable .ckpt")
            for member in members:
                found |= pickle_globals(archive.read(member))
        return found
    opened = contextlib.nullcontext(path) if hasattr(path, "read") else open(path, "rb")  # noqa: SIM115 - the with below closes it
    with opened as fh:
        fh.seek(0)
        # Legacy torch files put their pickles first; 64 MiB is far beyond any real pickle header.
        data = fh.read(64 * 1024 * 1024)
    return pickle_globals(data)


def check_checkpoint(path):
    """Raise PickleScanError unless every global the checkpoint imports is on the safe list."""
    dangerous, unknown = classify(checkpoint_globals(path))
    if dangerous:
        raise PickleScanError(
            "its pickle imports {}, which can run code when the WebUI loads it".format(", ".join(dangerous))
        )
    if unknown:
        raise PickleScanError(
            "its pickle imports {}, which a checkpoint does not need (refused to be safe)".format(
                ", ".join(unknown)
            )
        )
    return True
