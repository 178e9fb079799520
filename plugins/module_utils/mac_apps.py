"""The seed's Mac apps (DiffusionBee, Mochi Diffusion): which names sdenv_apps accepts for them, and how one
pinned app bundle is checked and put into the dummy's ~/Applications.

Homebrew cannot pin a cask (`brew install --cask` takes the cask's current .rb), so the lock keeps each cask's
url and sha256 (lock.yml sdenv_lock.mac_apps) and the module mac_app downloads that url itself through the
model download machinery (model_download.Installer: resume, free space, size and SHA256, other bytes kept
aside in a rejected directory, never installed). The disk image is then attached read-only and unbrowsed,
the .app copied out with `ditto` (which keeps the bundle's symbolic links, extended attributes and code
signature as they are), and the image detached. The bundle goes into place by rename from a staging name in
the same directory, so ~/Applications never holds half an app.

Plain Python (stdlib, Python >= 3.9: it runs on the Mac's own Python). Commands go through a
`run(argv, data=None) -> (rc, stdout, stderr)` callable: AnsibleModule.run_command in the module, a recorder
in tests. The recorded outputs the unit tests use are written from Apple's documented formats (hdiutil(1)
`-plist`, defaults(1), Info.plist keys), not captured on a Mac: see tests/unit/test_mac_apps.py.
"""

import contextlib
import os
import plistlib
import shutil
import tempfile

# The names sdenv_apps accepts for the Mac apps, each the Homebrew cask's token (lock.yml mac_apps keys).
MAC_APP_NAMES = ("diffusionbee", "mochi-diffusion")

# hdiutil stops at a disk image's licence agreement and waits for an answer on stdin; Homebrew's dmg unpacking
# answers it the same way ("q" leaves the pager, "y" agrees). An image without one ignores the input.
LICENCE_ANSWER = "qy\n"
HDIUTIL = "/usr/bin/hdiutil"
DITTO = "/usr/bin/ditto"
DEFAULTS = "/usr/bin/defaults"
STAGING_PREFIX = ".sdenv-staging-"
OLD_PREFIX = ".sdenv-old-"


class MacAppError(Exception):
    """A refusal or a failed step; the message is one sentence saying what and what to do."""


# --- sdenv_apps ----------------------------------------------------------------------------------------


def mac_apps_in(apps):
    """The Mac apps among the names of sdenv_apps, in the order given."""
    return [name for name in apps or () if name in MAC_APP_NAMES]


def platform_refusal(apps, system, where="sdenv_apps"):
    """One sentence when sdenv_apps asks for a Mac app on a host that is not a Mac, else None."""
    wanted = mac_apps_in(apps)
    if not wanted or system == "Darwin":
        return None
    one = len(wanted) == 1
    return (
        f"{where} asks for {' and '.join(wanted)}, {'a macOS app' if one else 'macOS apps'} (Homebrew"
        f" {'cask' if one else 'casks'}), but this host runs {system or 'an unknown system'}: remove"
        f" {'it' if one else 'them'} from sdenv_apps for this host, or leave the host out with LIMIT."
    )


def version_tuple(text):
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def download_for(name, entry, architecture, macos_version):
    """The lock's download of app `name` for this Mac ({url, sha256, size}); MacAppError when the cask has
    none for this architecture or needs a newer macOS (the cask's depends_on)."""
    downloads = entry.get("downloads") or {}
    arch = "arm64" if architecture in ("arm64", "aarch64") else architecture
    if arch not in downloads:
        raise MacAppError(
            f"{name} {entry.get('version')} has no build for this Mac's architecture {architecture} (the cask"
            f" ships {', '.join(sorted(downloads)) or 'none'}): remove {name} from sdenv_apps for this host."
        )
    minimum = entry.get("min_macos")
    if minimum and macos_version and version_tuple(macos_version) < version_tuple(minimum):
        raise MacAppError(
            f"{name} {entry.get('version')} needs macOS {minimum} or later and this Mac runs {macos_version}:"
            f" update macOS, or remove {name} from sdenv_apps for this host."
        )
    return downloads[arch]


# --- what is there ------------------------------------------------------------------------------------


def read_bundle(info_plist):
    """(CFBundleIdentifier, CFBundleShortVersionString) from an Info.plist's bytes (XML or binary)."""
    try:
        info = plistlib.loads(info_plist)
    except Exception as exc:  # plistlib raises several types for bad input
        raise MacAppError(f"its Info.plist cannot be read ({exc})") from None
    if not isinstance(info, dict):
        raise MacAppError("its Info.plist is not a dictionary")
    return info.get("CFBundleIdentifier"), info.get("CFBundleShortVersionString")


def present_bundle(app_path):
    """What is at app_path: None (nothing), or {"bundle_id", "version"} / {"unreadable": why}."""
    if not os.path.lexists(app_path):
        return None
    if os.path.islink(app_path) or not os.path.isdir(app_path):
        return {"unreadable": "it is not an app bundle (a file or a symbolic link)"}
    try:
        with open(os.path.join(app_path, "Contents", "Info.plist"), "rb") as handle:
            bundle_id, version = read_bundle(handle.read())
    except OSError as exc:
        return {"unreadable": f"its Info.plist cannot be read ({exc.strerror})"}
    except MacAppError as exc:
        return {"unreadable": str(exc)}
    return {"bundle_id": bundle_id, "version": version}


def plan(app_path, present, entry, recorded_ours):
    """What to do with app_path: "keep" (the pinned version is there), "install" (nothing there) or
    "replace" (an app the toolkit installed, at another version: Mochi Diffusion updates itself). Anything
    the toolkit did not put there and that is not the pinned version is refused: it is the user's."""
    if present is None:
        return "install"
    pinned = (entry.get("bundle_id"), str(entry.get("version")))
    if "unreadable" not in present and (present["bundle_id"], present["version"]) == pinned:
        return "keep"
    if recorded_ours:
        return "replace"
    what = present.get("unreadable") or f"{present['bundle_id']} version {present['version']}"
    raise MacAppError(
        f"{app_path} is already there ({what}) and the toolkit did not install it, so it is not replaced by"
        f" the pinned {pinned[0]} {pinned[1]}: move it out of the way (or delete it), then provision again."
    )


# --- hdiutil -------------------------------------------------------------------------------------------


def parse_attach(stdout):
    """The mount points and the whole-disk device of `hdiutil attach -plist` output (a plist with
    system-entities; an image with a licence agreement prints the licence text first)."""
    start = stdout.find("<?xml")
    if start < 0:
        raise MacAppError("hdiutil attach printed no property list")
    try:
        doc = plistlib.loads(stdout[start:].encode("utf-8"))
    except Exception as exc:
        raise MacAppError(f"hdiutil attach printed a property list that cannot be read ({exc})") from None
    entities = doc.get("system-entities") if isinstance(doc, dict) else None
    if not isinstance(entities, list):
        raise MacAppError("hdiutil attach printed no system-entities")
    mounts = [e["mount-point"] for e in entities if isinstance(e, dict) and e.get("mount-point")]
    devices = sorted(e.get("dev-entry", "") for e in entities if isinstance(e, dict) and e.get("dev-entry"))
    # The whole disk (/dev/disk4) sorts before its slices (/dev/disk4s1); detaching it detaches them all.
    return mounts, (devices[0] if devices else None)


def attach_argv(image, mountpoint):
    return [
        HDIUTIL,
        "attach",
        "-plist",
        "-nobrowse",
        "-readonly",
        "-noautoopen",
        "-mountpoint",
        mountpoint,
        image,
    ]


def detach(run, device_or_mount):
    """Detach, forcing it when a process (Spotlight, an antivirus) holds the volume a moment too long."""
    rc, _, err = run([HDIUTIL, "detach", device_or_mount])
    if rc != 0:
        rc, _, err = run([HDIUTIL, "detach", "-force", device_or_mount])
    if rc != 0:
        raise MacAppError(
            f"hdiutil could not detach {device_or_mount} ({err.strip() or 'exit ' + str(rc)}): detach it in"
            " Disk Utility or with `hdiutil detach -force`, then provision again."
        )


# --- putting the bundle into place ---------------------------------------------------------------------


def archive_kind(path):
    lower = path.lower()
    if lower.endswith(".dmg"):
        return "dmg"
    if lower.endswith(".zip"):
        return "zip"
    raise MacAppError(
        f"{os.path.basename(path)} is neither a .dmg nor a .zip: the toolkit unpacks only those."
    )


def structure_problem(head, tail, kind):
    """Why bytes are not a disk image / zip archive (a clause), or None. A UDIF disk image ends with a 512-byte
    trailer starting 'koly' (Apple's UDIF format); a zip starts 'PK'. The SHA256 pin decides anyway: this
    only names an HTML page or an error document plainly."""
    if kind == "dmg" and not (len(tail) >= 512 and tail[-512:-508] == b"koly"):
        return "is not an Apple disk image (no 'koly' trailer)"
    if kind == "zip" and not head.startswith(b"PK"):
        return "is not a zip archive"
    return None


def _remove_tree(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def clean_staging(applications, app):
    """Leftovers of a run killed half-way (staging copies, the old bundle set aside), as names removed."""
    removed = []
    for prefix in (STAGING_PREFIX, OLD_PREFIX):
        path = os.path.join(applications, prefix + app)
        if os.path.lexists(path):
            _remove_tree(path)
            removed.append(path)
    return removed


def copy_out(run, archive, app, applications, workdir):
    """Unpack `app` from archive into applications/<STAGING_PREFIX><app>, returning that path."""
    staging = os.path.join(applications, STAGING_PREFIX + app)
    kind = archive_kind(archive)
    if kind == "zip":
        unpacked = tempfile.mkdtemp(prefix="unzip-", dir=workdir)
        try:
            rc, _, err = run([DITTO, "-x", "-k", archive, unpacked])
            if rc != 0:
                raise MacAppError(f"ditto could not unpack {os.path.basename(archive)} ({err.strip()}).")
            _copy_bundle(run, os.path.join(unpacked, app), staging, archive)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
        return staging
    mountpoint = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
    try:
        rc, out, err = run(attach_argv(archive, mountpoint), data=LICENCE_ANSWER)
        if rc != 0:
            raise MacAppError(
                f"hdiutil could not attach {os.path.basename(archive)} ({err.strip() or 'exit ' + str(rc)})."
            )
        mounts, device = parse_attach(out)
        try:
            if mountpoint not in mounts:
                raise MacAppError(
                    f"hdiutil attached {os.path.basename(archive)} at {', '.join(mounts) or 'no mount point'}, not"
                    f" at {mountpoint} as asked."
                )
            _copy_bundle(run, os.path.join(mountpoint, app), staging, archive)
        finally:
            detach(run, device or mountpoint)
    finally:
        # Still mounted after a failed detach: the sentence above says what to do.
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
    return staging


def _copy_bundle(run, source, staging, archive):
    if not os.path.isdir(source) or os.path.islink(source):
        raise MacAppError(
            f"{os.path.basename(archive)} holds no {os.path.basename(source)}: the cask names that app, so the"
            " pin in lock.yml does not match this download."
        )
    rc, _, err = run([DITTO, source, staging])
    if rc != 0:
        if os.path.lexists(staging):
            _remove_tree(staging)
        raise MacAppError(
            f"ditto could not copy {os.path.basename(source)} ({err.strip() or 'exit ' + str(rc)})."
        )


def put_in_place(staging, app_path):
    """Rename the staged bundle to app_path; an older bundle there is set aside first and removed after."""
    applications, app = os.path.split(app_path)
    old = os.path.join(applications, OLD_PREFIX + app)
    if os.path.lexists(app_path):
        os.rename(app_path, old)
    os.rename(staging, app_path)
    if os.path.lexists(old):
        _remove_tree(old)


def install(run, archive, entry, applications, workdir):
    """Unpack the pinned app from a verified archive into applications; returns its path. The bundle that
    lands must be the pinned one (CFBundleIdentifier and CFBundleShortVersionString) or nothing changes."""
    app = entry["app"]
    app_path = os.path.join(applications, app)
    os.makedirs(applications, mode=0o755, exist_ok=True)
    clean_staging(applications, app)
    staging = copy_out(run, archive, app, applications, workdir)
    found = present_bundle(staging)
    wanted = (entry.get("bundle_id"), str(entry.get("version")))
    if found is None or "unreadable" in found or (found["bundle_id"], found["version"]) != wanted:
        _remove_tree(staging)
        what = (found or {}).get("unreadable") or f"{found['bundle_id']} version {found['version']}"
        raise MacAppError(
            f"{os.path.basename(archive)} passed its SHA256 but its {app} is {what}, not {wanted[0]} {wanted[1]}:"
            " the lock's version, bundle_id and sha256 disagree; correct lock.yml from the cask."
        )
    put_in_place(staging, app_path)
    return app_path


# --- the download ------------------------------------------------------------------------------------


def archive_installer(spec_args, check_mode=False):
    """A model_download.Installer for one archive: the same resume, space, size and SHA256 checks and the same
    rejected directory; the structure check is the archive's (structure_problem), not a model's. spec_args:
    model_download.Spec's arguments (dest, urls, sha256, size, stat_cache, rejected_dir, dirs_below, ...)."""
    try:
        from ansible.module_utils.model_download import Installer, SourceError, Spec
    except ImportError:
        try:  # installed as the Ansible collection sdenv.toolkit
            from ansible_collections.sdenv.toolkit.plugins.module_utils.model_download import (
                Installer,
                SourceError,
                Spec,
            )
        except ImportError:  # unit tests import the module_utils directory directly
            from model_download import Installer, SourceError, Spec

    kind = archive_kind(spec_args["dest"])

    class ArchiveInstaller(Installer):
        def _check_open_structure(self, fh):
            head = fh.read(4)
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 512))
            problem = structure_problem(head, fh.read(512), kind)
            if problem:
                raise SourceError(problem)

    # allow_ckpt lifts model_download's refusal of every name but .safetensors (a pickle guard): an archive is
    # no pickle, and its own structure check above replaces the pickle scan.
    return ArchiveInstaller(Spec(allow_ckpt=True, **spec_args), check_mode=check_mode)


# --- Mochi Diffusion's model folder --------------------------------------------------------------------


def read_default(run, domain, key):
    """A string user default (`defaults read DOMAIN KEY`), or None when it is not set (defaults(1) exits 1
    and says the domain/default pair does not exist)."""
    rc, out, err = run([DEFAULTS, "read", domain, key])
    if rc != 0:
        if "does not exist" in err:
            return None
        raise MacAppError(f"defaults could not read {domain} {key} ({err.strip() or 'exit ' + str(rc)}).")
    return out[:-1] if out.endswith("\n") else out


def coreml_models(directory, listdir=os.listdir, exists=os.path.exists):
    """The model folders Mochi Diffusion would list in `directory`: subfolders with a compiled Core ML UNet
    (Unet.mlmodelc, UnetChunk1.mlmodelc or ControlledUnet.mlmodelc with its metadata.json; MochiDiffusion's
    SDModel.swift unetMetadataURL)."""
    found = []
    for name in sorted(listdir(directory)):
        for unet in ("Unet.mlmodelc", "UnetChunk1.mlmodelc", "ControlledUnet.mlmodelc"):
            if exists(os.path.join(directory, name, unet, "metadata.json")):
                found.append(name)
                break
    return found


def set_model_dir(run, domain, key, directory, check_mode=False):
    """Point Mochi Diffusion's model folder setting (its @AppStorage "ModelDir") at directory; True when
    it changed. Refused when the folder holds no Core ML model: pointing the app at a folder of
    .safetensors would only show it an empty list."""
    if not os.path.isdir(directory):
        raise MacAppError(
            f"sdenv_mac_apps_mochi_models_dir is {directory}, which is not a directory: convert a model to Core"
            " ML first (README of role mac_apps), put its folder there, or leave the setting empty."
        )
    if not coreml_models(directory):
        raise MacAppError(
            f"sdenv_mac_apps_mochi_models_dir is {directory}, which holds no Core ML model folder (a subfolder"
            " with Unet.mlmodelc/metadata.json): Mochi Diffusion cannot read .safetensors; convert first, or"
            " leave the setting empty."
        )
    # The app writes the folder back as a directory URL's path, with a trailing slash.
    current = read_default(run, domain, key)
    if current is not None and current.rstrip("/") == directory.rstrip("/"):
        return False
    if not check_mode:
        rc, _, err = run([DEFAULTS, "write", domain, key, "-string", directory])
        if rc != 0:
            raise MacAppError(
                f"defaults could not write {domain} {key} ({err.strip() or 'exit ' + str(rc)})."
            )
    return True


# --- the model store, as far as each app allows ---------------------------------------------------------


def models_note(name, entry, checkpoints_dir, user, models_dir=""):
    """One sentence on what the toolkit does for app `name` with the model store's checkpoints
    (checkpoints_dir, <sdenv_model_store>/checkpoints), from each app's documented behaviour: neither app
    can read a .safetensors in place, so neither is pointed at the store itself."""
    version = entry.get("version")
    if name == "diffusionbee":
        # Its importer (Models > Import From Computer) converts a checkpoint into its own .tdict copy in
        # ~/.diffusionbee/imported_models; it has no setting for a folder of checkpoints to read in place.
        return (
            f"DiffusionBee {version} reads only its own converted copies (~/.diffusionbee/imported_models, about"
            f" the checkpoint's size again), so the toolkit sets nothing: as {user}, open it, choose Models,"
            f" Import From Computer, and pick a .safetensors file in {checkpoints_dir}."
        )
    if name == "mochi-diffusion":
        if models_dir:
            return (
                f"Mochi Diffusion {version}'s model folder (its ModelDir setting) is {models_dir}, your Core ML"
                f" conversions; it cannot read the .safetensors in {checkpoints_dir}."
            )
        return (
            f"Mochi Diffusion {version} reads Core ML conversions only, not the .safetensors in {checkpoints_dir},"
            " so its model folder stays its own (~/MochiDiffusion/models): convert a model (README of role"
            " mac_apps) and set sdenv_mac_apps_mochi_models_dir to point the app there."
        )
    raise MacAppError(f"{name} is not one of the Mac apps ({', '.join(MAC_APP_NAMES)}).")
