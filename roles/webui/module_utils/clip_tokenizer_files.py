"""The Hugging Face cache for openai/clip-vit-large-patch14, produced from pinned sources only.

Every SD1/SDXL model load in the WebUI asks transformers for the CLIP tokenizer of
`openai/clip-vit-large-patch14`. With `HF_HUB_OFFLINE=1` that only works when the files are already in
`$HF_HOME/hub`. They need no Hugging Face access: `vocab.json` and `merges.txt` derive from
`clip/bpe_simple_vocab_16e6.txt.gz` inside the pinned CLIP archive (the same BPE table, written the way the
hub wrote it), and the three small JSON files are fixed data the role ships. Each file is checked against
the sha256 the lock pins before it is placed, so a wrong archive never produces a silently wrong tokenizer.

Layout written (what huggingface_hub reads offline):
    <HF_HOME>/hub/version.txt                                    "1" (silences the cache-migration warning)
    <HF_HOME>/hub/models--openai--clip-vit-large-patch14/refs/main           <revision>
    <HF_HOME>/hub/models--openai--clip-vit-large-patch14/snapshots/<revision>/<file>
"""

import gzip
import hashlib
import json
import os
import zipfile

try:
    from ansible.module_utils.webui_files import sha256_file, write_atomic
except ImportError:  # unit tests import the module_utils directories directly
    from webui_files import sha256_file, write_atomic  # noqa: F401

REPO_ID = "openai/clip-vit-large-patch14"
BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP's SimpleTokenizer keeps lines 1..48894 of the BPE file (merges[1:49152-256-2+1]).
MERGE_LIMIT = 49152 - 256 - 2
SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]


class TokenizerCacheError(Exception):
    """A source that cannot produce the pinned files."""


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, in CLIP's order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes]))


def read_bpe_from_archive(archive_path):
    """The BPE table's text from a CLIP source archive (GitHub's zip: one top-level directory)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            names = [n for n in archive.namelist() if n == BPE_MEMBER or n.endswith("/" + BPE_MEMBER)]
            if not names:
                raise TokenizerCacheError(
                    f"The CLIP archive {archive_path} has no {BPE_MEMBER}: the lock's CLIP archive is not a "
                    "CLIP source tree; fix sdenv_lock.clip."
                )
            with archive.open(sorted(names, key=len)[0]) as member:
                return gzip.decompress(member.read()).decode("utf-8")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TokenizerCacheError(f"The CLIP archive {archive_path} cannot be read ({exc}).") from exc


def merges_from_bpe(bpe_text):
    lines = bpe_text.split("\n")[1 : MERGE_LIMIT + 1]
    return [tuple(line.split()) for line in lines if line.strip()]


def vocab_json_bytes(merges):
    table = list(bytes_to_unicode().values())
    tokens = table + [t + "</w>" for t in table] + ["".join(pair) for pair in merges] + SPECIAL_TOKENS
    vocab = {token: index for index, token in enumerate(tokens)}
    # The hub's file: one line, default separators, raw UTF-8, no trailing newline.
    return json.dumps(vocab, ensure_ascii=False).encode("utf-8")


def merges_txt_bytes(merges):
    return ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8")


def derived_files(archive_path):
    """{file name: bytes} for the two files derived from the archive."""
    merges = merges_from_bpe(read_bpe_from_archive(archive_path))
    return {"vocab.json": vocab_json_bytes(merges), "merges.txt": merges_txt_bytes(merges)}


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def check_hashes(files, expected):
    """Raise unless every file has the sha256 the lock pins for it, and every file is pinned."""
    for name in sorted(set(files) - set(expected)):
        raise TokenizerCacheError(f"The CLIP tokenizer file {name} has no sha256 in the lock: pin it first.")
    for name in sorted(expected):
        if name not in files:
            raise TokenizerCacheError(f"The CLIP tokenizer file {name} pinned in the lock has no source.")
        actual = sha256_bytes(files[name])
        if actual != expected[name]:
            raise TokenizerCacheError(
                f"The CLIP tokenizer file {name} has sha256 {actual}, the lock pins {expected[name]}: "
                "the CLIP archive or the shipped file is not the pinned one; nothing was written."
            )


def repo_dir(hf_home):
    return os.path.join(hf_home, "hub", "models--" + REPO_ID.replace("/", "--"))


def planned_files(hf_home, revision, files):
    """{absolute path: bytes} for everything the cache needs."""
    base = repo_dir(hf_home)
    plan = {os.path.join(hf_home, "hub", "version.txt"): b"1"}
    plan[os.path.join(base, "refs", "main")] = revision.encode("ascii")
    for name, data in files.items():
        plan[os.path.join(base, "snapshots", revision, name)] = data
    return plan


def file_matches(path, data):
    try:
        if os.path.getsize(path) != len(data):
            return False
    except OSError:
        return False
    return sha256_file(path) == sha256_bytes(data)
