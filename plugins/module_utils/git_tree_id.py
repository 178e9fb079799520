"""The git tree id of a source archive's files, so an archive is checked by what it holds, not its bytes.

GitHub does not promise stable archive bytes (compression changes), but the files of
`<repo>/archive/<commit>.zip` must reproduce the commit's git tree. Rebuilding the tree id from the zip
(blob and tree objects exactly as git hashes them, file modes included) checks that, and an archive made
with `git archive --format=zip --prefix=<name>-<commit>/ <commit>` from any clone passes the same check.
"""

import hashlib
import stat
import zipfile


class TreeIdError(Exception):
    """An archive whose layout cannot be a git tree (no single top directory, an unknown file type)."""


def git_object_id(kind, data):
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(data)) + data, usedforsecurity=False).hexdigest()


def _mode(info):
    unix = info.external_attr >> 16
    if stat.S_ISLNK(unix):
        return "120000"
    if unix & 0o111:
        return "100755"
    return "100644"


def _tree_id(node):
    """node: {name: (mode, blob_id) | dict}; returns the tree's id (git's entry order: dirs sort as 'name/')."""
    entries = []
    for name, value in node.items():
        if isinstance(value, dict):
            entries.append((name + "/", b"40000 %s\0" % name.encode() + bytes.fromhex(_tree_id(value))))
        else:
            mode, blob = value
            entries.append((name, b"%s %s\0" % (mode.encode(), name.encode()) + bytes.fromhex(blob)))
    return git_object_id("tree", b"".join(entry for _, entry in sorted(entries, key=lambda e: e[0].encode())))


def zip_tree_id(path):
    """(tree id, top directory) of a GitHub-style source zip: every member under one top directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            tops = {info.filename.split("/", 1)[0] for info in infos}
            if len(tops) != 1:
                raise TreeIdError(f"{path} does not hold exactly one top directory ({len(tops)} found)")
            top = tops.pop()
            root = {}
            for info in infos:
                relative = info.filename[len(top) + 1 :]
                if not relative or info.is_dir():
                    continue
                parts = relative.split("/")
                node = root
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise TreeIdError(f"{path} has {relative} under a file")
                node[parts[-1]] = (_mode(info), git_object_id("blob", archive.read(info)))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TreeIdError(f"{path} is not a readable zip archive ({exc})") from exc
    return _tree_id(root), top
