"""What a deleted account leaves outside its home and the record: its files in the shared temp directories.

The dummy's processes (torch, uv, pip, the WebUI) write temp files into /tmp and /var/tmp that outlive them;
after the account is gone they would belong to a dead uid, and to whichever account gets that uid next.
remove_files_owned_by() deletes, in those directories only, the files, links and (then empty) directories
owned by the account's uid, and nothing else:

- it never follows a symbolic link: every directory is opened relative to its parent's descriptor with
  O_NOFOLLOW and every entry is deleted with dir_fd, so a directory swapped for a link meanwhile (by whoever
  owns it) cannot carry a deletion elsewhere; a link is deleted itself, never what it points to;
- it stays on the file system each temp directory is on (a mount inside /tmp is not walked);
- a directory of the account that still holds somebody else's file is kept (with that file);
- the places in `keep` (the state directory, what another account still uses) are never entered, as they
  resolve: a test or a host may well keep them under /tmp.

The caller runs it while the account still exists (its processes stopped), so that the uid cannot have been
given to a new account yet.
"""

import os
import stat

TEMP_DIRECTORIES = ("/tmp", "/var/tmp")


def remove_files_owned_by(uid, tops=TEMP_DIRECTORIES, keep=()):
    """Delete what `uid` owns below each of `tops`, outside `keep`; -> the paths deleted (as resolved)."""
    removed, keep = [], {os.path.realpath(path) for path in keep}
    for top in tops:
        try:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)  # the top itself may be a system link (macOS)
        except OSError:
            continue
        try:
            _sweep(fd, os.path.realpath(top), uid, os.fstat(fd).st_dev, removed, keep)
        finally:
            os.close(fd)
    return removed


def _sweep(dir_fd, path, uid, device, removed, keep):
    try:
        entries = list(os.scandir(dir_fd))
    except OSError:
        return
    for entry in entries:
        full = os.path.join(path, entry.name)
        if full in keep:
            continue
        try:
            info = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(info.st_mode):
            if info.st_dev != device:
                continue
            try:
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError:
                continue  # replaced by a link or a file meanwhile: not walked
            try:
                _sweep(child, full, uid, device, removed, keep)
            finally:
                os.close(child)
            if info.st_uid == uid:
                try:
                    os.rmdir(entry.name, dir_fd=dir_fd)
                    removed.append(full)
                except OSError:
                    pass  # it still holds somebody else's file: kept, with that file
        elif info.st_uid == uid:
            try:
                os.unlink(entry.name, dir_fd=dir_fd)
                removed.append(full)
            except OSError:
                pass
