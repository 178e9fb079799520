"""Role mac_apps' logic (plugins/module_utils/mac_apps.py) against recorded macOS command outputs.

Nothing here ran on a Mac. The recorded outputs are WRITTEN FROM APPLE'S DOCUMENTED BEHAVIOUR, not captured:
- `hdiutil attach -plist`: hdiutil(1) - "-plist: provide result output in plist format"; the result is a
  dictionary whose `system-entities` array has one dictionary per device (`dev-entry`, `content-hint`,
  `potentially-mountable`, and for a mounted volume `mount-point` and `volume-kind`); an image with a software
  licence agreement shows the agreement first (hdiutil(1), "-noverify"/SLA notes), answered on stdin.
- `hdiutil detach`: prints '"disk4" ejected.' and exits 0; a busy volume exits 1 with "Resource busy"
  until `-force`.
- `defaults read DOMAIN KEY` (defaults(1)): the value and a newline, exit 0; a missing key exits 1 with
  "The domain/default pair of (DOMAIN, KEY) does not exist" on stderr.
- `ditto SRC DST` (ditto(1)): copies the bundle (symbolic links, extended attributes and ACLs kept), silent
  on success; `ditto -x -k ARCHIVE DST` unpacks a zip archive.
- Info.plist keys CFBundleIdentifier and CFBundleShortVersionString (Apple's Information Property List
  reference); plistlib reads both the XML and the binary form.
The fake Mac below does to the file system what these commands do, so the module's steps (mount point,
staging copy, rename into place, detach) are exercised for real on this machine's files.
"""

import hashlib
import os
import plistlib
import re
import shutil
import zipfile

import mac_apps
import pytest
import sdenv_preflight_rules as rules
import yaml

from tests.unit.test_preflight import ROOT, good_values, run

LOCK = yaml.safe_load((ROOT / "inventory/group_vars/all/lock.yml").read_text())["sdenv_lock"]
DIFFUSIONBEE = LOCK["mac_apps"]["diffusionbee"]
MOCHI = LOCK["mac_apps"]["mochi-diffusion"]

# hdiutil attach -plist for a one-volume image (written from hdiutil(1), see the module docstring).
ATTACH_PLIST = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>system-entities</key>
	<array>
		<dict>
			<key>content-hint</key>
			<string>GUID_partition_scheme</string>
			<key>dev-entry</key>
			<string>/dev/disk4</string>
			<key>potentially-mountable</key>
			<false/>
			<key>unmapped-content-hint</key>
			<string>GUID_partition_scheme</string>
		</dict>
		<dict>
			<key>content-hint</key>
			<string>Apple_HFS</string>
			<key>dev-entry</key>
			<string>/dev/disk4s1</string>
			<key>mount-point</key>
			<string>{mountpoint}</string>
			<key>potentially-mountable</key>
			<true/>
			<key>unmapped-content-hint</key>
			<string>48465300-0000-11AA-AA11-00306543ECAC</string>
			<key>volume-kind</key>
			<string>hfs</string>
		</dict>
	</array>
</dict>
</plist>
"""
LICENCE_TEXT = "SOFTWARE LICENSE AGREEMENT\nBy clicking Agree you accept ...\n"
DEFAULTS_MISSING = (
    "\n2026-12-07 07:40:00.000 defaults[4242:51234] \n"
    "The domain/default pair of (com.joshua-park.Mochi-Diffusion, ModelDir) does not exist\n"
)


def info_plist(bundle_id, version, fmt=plistlib.FMT_XML):
    return plistlib.dumps(
        {"CFBundleIdentifier": bundle_id, "CFBundleShortVersionString": version, "CFBundleExecutable": "x"},
        fmt=fmt,
    )


def make_bundle(parent, app, bundle_id, version, fmt=plistlib.FMT_XML):
    contents = parent / app / "Contents"
    (contents / "MacOS").mkdir(parents=True)
    (contents / "Info.plist").write_bytes(info_plist(bundle_id, version, fmt))
    (contents / "MacOS" / "app").write_bytes(b"\xcf\xfa\xed\xfe binary")
    (contents / "Frameworks").mkdir()
    os.symlink("Versions/Current", contents / "Frameworks" / "Current")
    return parent / app


class FakeMac:
    """Does what hdiutil, ditto and defaults do (as documented) to this machine's files, and records calls."""

    def __init__(self, image_dir, licence=False, detach_busy=0, ditto_fails=False):
        self.image_dir, self.licence, self.detach_busy = image_dir, licence, detach_busy
        self.ditto_fails = ditto_fails
        self.calls, self.inputs, self.defaults, self.mounted = [], [], {}, None

    def __call__(self, argv, data=None):
        self.calls.append(list(argv))
        self.inputs.append(data)
        tool, args = os.path.basename(argv[0]), argv[1:]
        if tool == "hdiutil" and args[0] == "attach":
            mountpoint = args[args.index("-mountpoint") + 1]
            assert os.listdir(mountpoint) == [], "mounting over a non-empty directory"
            shutil.copytree(self.image_dir, mountpoint, symlinks=True, dirs_exist_ok=True)
            self.mounted = mountpoint
            out = ATTACH_PLIST.format(mountpoint=mountpoint)
            return 0, (LICENCE_TEXT + out) if self.licence else out, ""
        if tool == "hdiutil" and args[0] == "detach":
            if self.detach_busy and "-force" not in args:
                self.detach_busy -= 1
                return 1, "", 'hdiutil: couldn\'t unmount "disk4" - Resource busy\n'
            if self.detach_busy and "-force" in args:
                return 1, "", 'hdiutil: couldn\'t unmount "disk4" - Resource busy\n'
            for entry in os.listdir(self.mounted):
                path = os.path.join(self.mounted, entry)
                os.unlink(path) if os.path.islink(path) else shutil.rmtree(path)
            self.mounted = None
            return 0, '"disk4" ejected.\n', ""
        if tool == "ditto":
            if self.ditto_fails:
                return 1, "", "ditto: /Users/dummy/Applications: No space left on device\n"
            if args[:2] == ["-x", "-k"]:
                with zipfile.ZipFile(args[2]) as archive:
                    archive.extractall(args[3])
                return 0, "", ""
            shutil.copytree(args[0], args[1], symlinks=True)
            return 0, "", ""
        if tool == "defaults" and args[0] == "read":
            key = (args[1], args[2])
            if key not in self.defaults:
                return 1, "", DEFAULTS_MISSING
            return 0, self.defaults[key] + "\n", ""
        if tool == "defaults" and args[0] == "write":
            assert args[3] == "-string"
            self.defaults[(args[1], args[2])] = args[4]
            return 0, "", ""
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def mac(tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    make_bundle(image, "DiffusionBee.app", DIFFUSIONBEE["bundle_id"], DIFFUSIONBEE["version"])
    (image / "Applications").symlink_to("/Applications")  # the drag-to-install link most images carry
    home = tmp_path / "Users" / "dummy"
    (home / "Library" / "Caches" / "sdenv-mac-apps").mkdir(parents=True)
    archive = home / "Library" / "Caches" / "sdenv-mac-apps" / "DiffusionBee_MPS_arm64-2.5.3.dmg"
    archive.write_bytes(b"image bytes")
    work = tmp_path / "work"
    work.mkdir()
    return {"image": image, "home": home, "archive": archive, "work": work, "apps": home / "Applications"}


# --- sdenv_apps and the platform ----------------------------------------------------------------------


def test_mac_apps_are_refused_on_linux_with_one_sentence():
    sentence = mac_apps.platform_refusal(["webui", "diffusionbee"], "Linux")
    assert sentence == (
        "sdenv_apps asks for diffusionbee, a macOS app (Homebrew cask), but this host runs Linux: remove it from"
        " sdenv_apps for this host, or leave the host out with LIMIT."
    )
    assert "diffusionbee and mochi-diffusion, macOS apps" in mac_apps.platform_refusal(
        ["diffusionbee", "mochi-diffusion"], "Linux"
    )
    assert mac_apps.platform_refusal(["diffusionbee", "mochi-diffusion"], "Darwin") is None
    assert mac_apps.platform_refusal(["webui"], "Linux") is None


def test_the_build_for_this_mac_or_a_sentence():
    assert mac_apps.download_for("diffusionbee", DIFFUSIONBEE, "arm64", "14.6")["url"].endswith(
        "arm64-2.5.3.dmg"
    )
    assert mac_apps.download_for("diffusionbee", DIFFUSIONBEE, "x86_64", "13.0")["url"].endswith(
        "intel-2.5.3.dmg"
    )
    with pytest.raises(
        mac_apps.MacAppError, match=r"no build for this Mac's architecture x86_64 \(the cask ships arm64\)"
    ):
        mac_apps.download_for("mochi-diffusion", MOCHI, "x86_64", "15.1")
    with pytest.raises(
        mac_apps.MacAppError, match=r"needs macOS 15.0 or later and this Mac runs 14.6: update macOS"
    ):
        mac_apps.download_for("mochi-diffusion", MOCHI, "arm64", "14.6")
    assert (
        mac_apps.download_for("mochi-diffusion", MOCHI, "arm64", "15.0.1")["sha256"]
        == MOCHI["downloads"]["arm64"]["sha256"]
    )


# --- what is there ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY])
def test_the_bundle_id_and_version_come_from_info_plist(fmt):
    assert mac_apps.read_bundle(info_plist("com.x.Y", "6.2", fmt)) == ("com.x.Y", "6.2")
    with pytest.raises(mac_apps.MacAppError, match=r"Info.plist cannot be read"):
        mac_apps.read_bundle(b"<html>not a plist</html>")


def test_plan_keeps_the_pin_installs_when_absent_replaces_only_its_own(tmp_path):
    path = str(tmp_path / "Applications" / "DiffusionBee.app")
    pinned = {"bundle_id": DIFFUSIONBEE["bundle_id"], "version": "2.5.3"}
    older = {"bundle_id": DIFFUSIONBEE["bundle_id"], "version": "2.4.4"}
    assert mac_apps.plan(path, None, DIFFUSIONBEE, recorded_ours=False) == "install"
    assert mac_apps.plan(path, pinned, DIFFUSIONBEE, recorded_ours=False) == "keep"
    assert mac_apps.plan(path, older, DIFFUSIONBEE, recorded_ours=True) == "replace"
    with pytest.raises(mac_apps.MacAppError) as refused:
        mac_apps.plan(path, older, DIFFUSIONBEE, recorded_ours=False)
    assert str(refused.value) == (
        f"{path} is already there (com.diffusionbee.diffusionbee version 2.4.4) and the toolkit did not install"
        " it, so it is not replaced by the pinned com.diffusionbee.diffusionbee 2.5.3: move it out of the way (or"
        " delete it), then provision again."
    )
    with pytest.raises(mac_apps.MacAppError, match=r"a file or a symbolic link"):
        mac_apps.plan(
            path, {"unreadable": "it is not an app bundle (a file or a symbolic link)"}, DIFFUSIONBEE, False
        )


def test_present_bundle_reads_what_is_on_disk(tmp_path):
    assert mac_apps.present_bundle(str(tmp_path / "None.app")) is None
    app = make_bundle(tmp_path, "Mochi Diffusion.app", MOCHI["bundle_id"], "6.2", plistlib.FMT_BINARY)
    assert mac_apps.present_bundle(str(app)) == {"bundle_id": MOCHI["bundle_id"], "version": "6.2"}
    (tmp_path / "Link.app").symlink_to(app)
    assert "symbolic link" in mac_apps.present_bundle(str(tmp_path / "Link.app"))["unreadable"]


# --- hdiutil ------------------------------------------------------------------------------------------------


def test_attach_output_gives_the_mount_point_and_the_whole_disk():
    out = ATTACH_PLIST.format(mountpoint="/Users/dummy/Library/Caches/sdenv-mac-apps/unpack-1/mnt-2")
    assert mac_apps.parse_attach(out) == (
        ["/Users/dummy/Library/Caches/sdenv-mac-apps/unpack-1/mnt-2"],
        "/dev/disk4",
    )
    assert mac_apps.parse_attach(LICENCE_TEXT + out)[1] == "/dev/disk4"
    with pytest.raises(mac_apps.MacAppError, match=r"printed no property list"):
        mac_apps.parse_attach("hdiutil: attach failed - image not recognized\n")


def test_a_busy_volume_is_detached_with_force_else_one_sentence():
    calls = []

    def busy_once(argv, data=None):
        calls.append(argv)
        return (1, "", "Resource busy\n") if "-force" not in argv else (0, '"disk4" ejected.\n', "")

    mac_apps.detach(busy_once, "/dev/disk4")
    assert calls == [
        ["/usr/bin/hdiutil", "detach", "/dev/disk4"],
        ["/usr/bin/hdiutil", "detach", "-force", "/dev/disk4"],
    ]
    with pytest.raises(
        mac_apps.MacAppError,
        match=r"could not detach /dev/disk4 \(Resource busy\): detach it in Disk Utility",
    ):
        mac_apps.detach(lambda argv, data=None: (1, "", "Resource busy\n"), "/dev/disk4")


# --- installing -----------------------------------------------------------------------------------------------


def test_a_dmg_is_attached_read_only_copied_with_ditto_and_detached(mac):
    fake = FakeMac(mac["image"], licence=True)
    path = mac_apps.install(fake, str(mac["archive"]), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"]))

    assert path == str(mac["apps"] / "DiffusionBee.app")
    assert mac_apps.present_bundle(path) == {"bundle_id": "com.diffusionbee.diffusionbee", "version": "2.5.3"}
    assert os.readlink(mac["apps"] / "DiffusionBee.app/Contents/Frameworks/Current") == "Versions/Current"
    assert sorted(os.listdir(mac["apps"])) == ["DiffusionBee.app"]  # no staging copy, no drag-to link
    attach, ditto, detach = fake.calls
    mountpoint = attach[attach.index("-mountpoint") + 1]
    assert attach[:6] == ["/usr/bin/hdiutil", "attach", "-plist", "-nobrowse", "-readonly", "-noautoopen"]
    assert attach[-1] == str(mac["archive"]) and mountpoint.startswith(str(mac["work"]))
    assert fake.inputs[0] == "qy\n"  # the licence agreement is answered, as Homebrew does
    assert ditto == [
        "/usr/bin/ditto",
        f"{mountpoint}/DiffusionBee.app",
        str(mac["apps"] / ".sdenv-staging-DiffusionBee.app"),
    ]
    assert detach == ["/usr/bin/hdiutil", "detach", "/dev/disk4"]
    assert fake.mounted is None and not os.path.exists(mountpoint)


def test_an_older_own_copy_is_replaced_and_leftovers_of_a_killed_run_cleaned(mac):
    make_bundle(mac["apps"], "DiffusionBee.app", DIFFUSIONBEE["bundle_id"], "2.4.4")
    make_bundle(mac["apps"], ".sdenv-staging-DiffusionBee.app", DIFFUSIONBEE["bundle_id"], "half")
    mac_apps.install(
        FakeMac(mac["image"]), str(mac["archive"]), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"])
    )
    assert sorted(os.listdir(mac["apps"])) == ["DiffusionBee.app"]
    assert mac_apps.present_bundle(str(mac["apps"] / "DiffusionBee.app"))["version"] == "2.5.3"


def test_an_image_whose_app_is_not_the_pinned_one_changes_nothing(mac):
    shutil.rmtree(mac["image"] / "DiffusionBee.app")
    make_bundle(mac["image"], "DiffusionBee.app", DIFFUSIONBEE["bundle_id"], "2.5.4")
    make_bundle(mac["apps"], "DiffusionBee.app", DIFFUSIONBEE["bundle_id"], "2.4.4")
    fake = FakeMac(mac["image"])
    with pytest.raises(mac_apps.MacAppError) as refused:
        mac_apps.install(fake, str(mac["archive"]), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"]))
    assert (
        "its DiffusionBee.app is com.diffusionbee.diffusionbee version 2.5.4, not com.diffusionbee.diffusionbee 2.5.3"
        in str(refused.value)
    )
    assert sorted(os.listdir(mac["apps"])) == ["DiffusionBee.app"]
    assert mac_apps.present_bundle(str(mac["apps"] / "DiffusionBee.app"))["version"] == "2.4.4"
    assert fake.mounted is None  # detached all the same


def test_an_image_without_the_app_and_a_failed_copy_are_sentences_and_still_detach(mac):
    shutil.rmtree(mac["image"] / "DiffusionBee.app")
    fake = FakeMac(mac["image"])
    with pytest.raises(mac_apps.MacAppError, match=r"holds no DiffusionBee.app: the cask names that app"):
        mac_apps.install(fake, str(mac["archive"]), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"]))
    assert fake.mounted is None and fake.calls[-1][:2] == ["/usr/bin/hdiutil", "detach"]
    make_bundle(mac["image"], "DiffusionBee.app", DIFFUSIONBEE["bundle_id"], "2.5.3")
    fake = FakeMac(mac["image"], ditto_fails=True)
    with pytest.raises(mac_apps.MacAppError, match=r"ditto could not copy DiffusionBee.app .*No space left"):
        mac_apps.install(fake, str(mac["archive"]), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"]))
    assert fake.mounted is None and os.listdir(mac["apps"]) == []


def test_a_zip_is_unpacked_with_ditto(mac):
    archive = mac["archive"].with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((mac["image"] / "DiffusionBee.app").rglob("*")):
            if path.is_file() and not path.is_symlink():
                z.write(path, path.relative_to(mac["image"]))
    fake = FakeMac(mac["image"])
    mac_apps.install(fake, str(archive), DIFFUSIONBEE, str(mac["apps"]), str(mac["work"]))
    assert fake.calls[0][:3] == ["/usr/bin/ditto", "-x", "-k"]
    assert mac_apps.present_bundle(str(mac["apps"] / "DiffusionBee.app"))["version"] == "2.5.3"
    assert os.listdir(mac["work"]) == []


# --- the download: model_download's checks, an archive's structure ------------------------------------------


def dmg_bytes(payload=b"\0" * 4096):
    """A stand-in UDIF image: any bytes that end with the 512-byte 'koly' trailer Apple's format has."""
    return payload + b"koly" + b"\0" * 508


def archive_args(home, bundle, sha256):
    cache = home / "Library" / "Caches" / "sdenv-mac-apps"
    return {
        "dest": str(cache / "DiffusionBee_MPS_arm64-2.5.3.dmg"),
        "urls": [str(bundle)],
        "sha256": sha256,
        "size": None,
        "stat_cache": str(cache / "stat-cache.json"),
        "rejected_dir": str(cache / "rejected"),
        "dirs_below": str(home),
        "bundle_dirs": [str(bundle)],
    }


@pytest.mark.parametrize(
    ("served", "pinned", "words"),
    [
        (dmg_bytes(), None, None),
        (dmg_bytes(b"other"), "pin", "has SHA256"),
        (b"<html>Not Found</html>", "served", "is not an Apple disk image (no 'koly' trailer)"),
    ],
    ids=["the pinned bytes", "other bytes", "a web page whose sha256 the lock was given by mistake"],
)
def test_the_archive_is_installed_only_with_the_pinned_bytes(tmp_path, served, pinned, words):
    home, bundle = tmp_path / "home", tmp_path / "bundle"
    home.mkdir()
    bundle.mkdir()
    (bundle / "DiffusionBee_MPS_arm64-2.5.3.dmg").write_bytes(served)
    sha = hashlib.sha256(dmg_bytes() if pinned != "served" else served).hexdigest()
    installer = mac_apps.archive_installer(archive_args(home, bundle, sha))
    cache = home / "Library" / "Caches" / "sdenv-mac-apps"
    if words is None:
        assert installer.run()["changed"] is True
        assert (cache / "DiffusionBee_MPS_arm64-2.5.3.dmg").read_bytes() == served
        return
    with pytest.raises(Exception, match=re.escape(words)) as refused:
        installer.run()
    assert "nothing was installed" in str(refused.value) or "kept" in str(refused.value)
    assert not (cache / "DiffusionBee_MPS_arm64-2.5.3.dmg").exists()
    assert (cache / "rejected" / "DiffusionBee_MPS_arm64-2.5.3.dmg.rejected").read_bytes() == served


# --- Mochi Diffusion's model folder -------------------------------------------------------------------------


def coreml_model(parent, name):
    unet = parent / name / "Unet.mlmodelc"
    unet.mkdir(parents=True)
    (unet / "metadata.json").write_text("[]")


def test_mochi_is_pointed_only_at_core_ml_models(tmp_path):
    fake, models = FakeMac(tmp_path), tmp_path / "coreml"
    models.mkdir()
    (models / "beautifulRealistic_v7.safetensors").write_bytes(b"x")
    with pytest.raises(
        mac_apps.MacAppError, match=r"holds no Core ML model folder .*cannot read .safetensors"
    ):
        mac_apps.set_model_dir(fake, MOCHI["bundle_id"], "ModelDir", str(models))
    with pytest.raises(mac_apps.MacAppError, match=r"which is not a directory"):
        mac_apps.set_model_dir(fake, MOCHI["bundle_id"], "ModelDir", str(tmp_path / "missing"))
    assert fake.defaults == {}
    coreml_model(models, "bra-v7_original_512x512")
    assert mac_apps.coreml_models(str(models)) == ["bra-v7_original_512x512"]
    assert mac_apps.set_model_dir(fake, MOCHI["bundle_id"], "ModelDir", str(models), check_mode=True) is True
    assert fake.defaults == {}
    assert mac_apps.set_model_dir(fake, MOCHI["bundle_id"], "ModelDir", str(models)) is True
    assert fake.defaults == {(MOCHI["bundle_id"], "ModelDir"): str(models)}
    # The app writes the folder back as a directory URL's path (trailing slash): still the same setting.
    fake.defaults[(MOCHI["bundle_id"], "ModelDir")] = str(models) + "/"
    assert mac_apps.set_model_dir(fake, MOCHI["bundle_id"], "ModelDir", str(models)) is False


STORE = "/Users/dummy/sd-models/checkpoints"


def test_each_app_is_told_about_the_model_store_as_far_as_it_allows():
    """Documented behaviour, no Mac: DiffusionBee imports by converting into its own copy, so it is given the
    store's checkpoints as the folder to import from; Mochi Diffusion reads Core ML only, so the store's
    .safetensors are never offered as its ModelDir (only a folder of conversions the user names)."""
    bee = mac_apps.models_note("diffusionbee", DIFFUSIONBEE, STORE, "dummy")
    assert bee == (
        "DiffusionBee 2.5.3 reads only its own converted copies (~/.diffusionbee/imported_models, about the"
        " checkpoint's size again), so the toolkit sets nothing: as dummy, open it, choose Models, Import From"
        f" Computer, and pick a .safetensors file in {STORE}."
    )
    mochi = mac_apps.models_note("mochi-diffusion", MOCHI, STORE, "dummy")
    assert mochi.startswith(
        f"Mochi Diffusion 6.2 reads Core ML conversions only, not the .safetensors in {STORE},"
    )
    assert "sdenv_mac_apps_mochi_models_dir" in mochi
    pointed = mac_apps.models_note("mochi-diffusion", MOCHI, STORE, "dummy", models_dir="/Users/dummy/coreml")
    assert pointed == (
        "Mochi Diffusion 6.2's model folder (its ModelDir setting) is /Users/dummy/coreml, your Core ML"
        f" conversions; it cannot read the .safetensors in {STORE}."
    )
    with pytest.raises(mac_apps.MacAppError, match="not one of the Mac apps"):
        mac_apps.models_note("webui", {}, STORE, "dummy")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"sdenv_model_store": "/Users/dummy/sd-models"}, STORE),
        (
            {},
            "/Users/dummy/stable-diffusion-webui/models/Stable-diffusion",
        ),  # a settings.yml without the store
    ],
)
def test_diffusionbee_imports_from_the_model_stores_checkpoints(variables, expected):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    defaults = yaml.safe_load((ROOT / "roles/mac_apps/defaults/main.yml").read_text())
    variables = {"sdenv_webui_dir": "/Users/dummy/stable-diffusion-webui", **variables}
    templar = Templar(loader=DataLoader(), variables=variables)
    assert templar.template(trust_as_template(defaults["sdenv_mac_apps_import_dir"])) == expected


# --- the preflight: names, platform, lock -----------------------------------------------------------------------

MAC_HOST = {
    "system": "Darwin", "os_family": "Darwin", "distribution": "MacOSX", "first_regular_uid": 501, "home_root": None,
    "accounts": [{"name": "root", "uid": 0, "home": "/var/root"}, {"name": "admin", "uid": 501, "home": "/Users/admin"}],
}  # fmt: skip


def test_the_preflight_refuses_a_mac_app_on_linux_before_any_change():
    sentence = run(uses=["mac_apps"], sdenv_apps=["webui", "mochi-diffusion"])
    assert len(sentence) == 1 and sentence[0] == (
        "sdenv_apps (settings.yml line 1) asks for mochi-diffusion, a macOS app (Homebrew cask), but this host runs"
        " Linux: remove it from sdenv_apps for this host, or leave the host out with LIMIT."
    )
    assert run(uses=["mac_apps"]) == []  # the default [webui]


def test_the_preflight_accepts_mac_apps_on_a_mac_and_refuses_unknown_names():
    values = dict(
        sdenv_apps=["webui", "diffusionbee", "mochi-diffusion"],
        sdenv_user_home="/Users/dummy",
        sdenv_webui_dir="/Users/dummy/stable-diffusion-webui",
    )
    assert run(uses=["mac_apps"], host=MAC_HOST, **values) == []
    (sentence,) = run(uses=["mac_apps"], host=MAC_HOST, **dict(values, sdenv_apps=["webui", "diffusion-bee"]))
    assert (
        "sets sdenv_apps[1] to 'diffusion-bee': expected one of webui, comfyui, diffusionbee, mochi-diffusion"
        in sentence
    )
    lock = good_values()["sdenv_lock"]
    del lock["mac_apps"]["mochi-diffusion"]
    (sentence,) = run(uses=["mac_apps"], host=MAC_HOST, sdenv_lock=lock, **values)
    assert "asks for mochi-diffusion, which sdenv_lock.mac_apps does not pin" in sentence


def test_an_offline_provision_with_mac_apps_is_refused_before_any_change():
    (sentence,) = run(
        uses=["mac_apps"],
        host=MAC_HOST,
        sdenv_apps=["webui", "diffusionbee"],
        sdenv_bundle="/Volumes/usb/sdenv-bundle",
        sdenv_user_home="/Users/dummy",
        sdenv_webui_dir="/Users/dummy/stable-diffusion-webui",
    )
    assert sentence == (
        "sdenv_apps (settings.yml line 1) asks for diffusionbee, whose disk image the bundle"
        " /Volumes/usb/sdenv-bundle does not carry (make bundle leaves the Mac apps out): provision without"
        " BUNDLE= to download it from its pinned cask, or remove it from sdenv_apps for the offline run."
    )


@pytest.mark.parametrize("system", ["Linux", "Darwin"])
def test_an_offline_provision_without_mac_apps_is_not_refused(system):
    """The guide's WebUI alone from a bundle, on any host: the Mac apps' rule has nothing to say."""
    home = "/Users/dummy" if system == "Darwin" else "/home/dummy"
    problems = run(
        uses=["mac_apps"],
        **({"host": MAC_HOST} if system == "Darwin" else {}),
        sdenv_apps=["webui"],
        sdenv_bundle="/media/usb/sdenv-bundle",
        sdenv_user_home=home,
        sdenv_webui_dir=f"{home}/stable-diffusion-webui",
    )
    assert problems == []


@pytest.mark.parametrize(
    ("architecture", "macos", "expected"),
    [
        ("arm64", "15.1", None),
        (
            "x86_64",
            "15.1",
            "sdenv_apps (settings.yml line 1) asks for mochi-diffusion, but mochi-diffusion 6.2 has no build for"
            " this Mac's architecture x86_64 (the cask ships arm64): remove mochi-diffusion from sdenv_apps for"
            " this host.",
        ),
        (
            "arm64",
            "14.7.1",
            "sdenv_apps (settings.yml line 1) asks for mochi-diffusion, but mochi-diffusion 6.2 needs macOS 15.0 or"
            " later and this Mac runs 14.7.1: update macOS, or remove mochi-diffusion from sdenv_apps for this host.",
        ),
    ],
)
def test_the_preflight_refuses_a_cask_this_mac_cannot_run_before_any_change(architecture, macos, expected):
    """ansible_facts as the preflight's own probe reads them on a Mac (platform and distribution collectors:
    architecture arm64 or x86_64, distribution_version 15.1), written from Ansible's documented facts."""
    host = dict(MAC_HOST, facts={"architecture": architecture, "distribution_version": macos})
    sentences = run(
        uses=["mac_apps"],
        host=host,
        sdenv_apps=["webui", "diffusionbee", "mochi-diffusion"],
        sdenv_user_home="/Users/dummy",
        sdenv_webui_dir="/Users/dummy/stable-diffusion-webui",
    )
    assert sentences == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            ("downloads", "arm64", "sha256"),
            "sdenv_lock.mac_apps.diffusionbee.downloads.arm64.sha256 to 'XYZ': expected 64 lowercase",
        ),
        (
            ("downloads", "arm64", "url"),
            "sdenv_lock.mac_apps.diffusionbee.downloads.arm64.url to 'XYZ': expected a URL",
        ),
        (("app",), "sdenv_lock.mac_apps.diffusionbee.app to 'XYZ': expected an app bundle's name"),
    ],
)
def test_the_lock_entries_of_the_mac_apps_are_checked(change, words):
    lock = good_values()["sdenv_lock"]
    target = lock["mac_apps"]["diffusionbee"]
    for key in change[:-1]:
        target = target[key]
    target[change[-1]] = "XYZ"
    (sentence,) = run(uses=["mac_apps"], sdenv_lock=lock)
    assert words in sentence


def test_the_mac_app_names_are_the_locks_and_the_rules_one_list():
    assert tuple(LOCK["mac_apps"]) == mac_apps.MAC_APP_NAMES
    assert rules.LOCK_SECTIONS["mac_apps:main"] == ("mac_apps",)
