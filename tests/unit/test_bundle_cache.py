"""The fleet cache's bookkeeping (roles/offline_bundle/module_utils/bundle_cache.py): the controller serves a file
only while its sha256 is the one SHA256SUMS names, and a host copies only what it lacks."""

import hashlib
import os

import bundle_cache as bc
import bundle_layout as bl
import pytest


def digest(data):
    return hashlib.sha256(data).hexdigest()


def make_bundle(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    bl.write_sums(str(directory))
    return directory


FILES = {
    "wheelhouse/a-1.whl": b"wheel a",
    "models/m.safetensors": b"model bytes" * 100,
    "git/w.git/HEAD": b"ref",
}


class CountingHasher:
    def __init__(self):
        self.paths = []

    def __call__(self, path):
        self.paths.append(os.path.relpath(path))
        with open(path, "rb") as handle:
            return digest(handle.read())


def test_a_sealed_cache_is_complete_and_read_by_stat_alone(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    first = bc.check_controller(str(bundle), "spec-1")
    assert (
        first["complete"] is False
    )  # never sealed for this spec: the builder runs (and fetches nothing new)
    listing = bc.seal_controller(str(bundle), "spec-1")
    assert [e["path"] for e in listing] == [*sorted(FILES), "SHA256SUMS"]
    hasher = CountingHasher()
    again = bc.check_controller(str(bundle), "spec-1", hasher=hasher)
    assert again == {"complete": True, "removed": [], "hashed": 0}
    assert hasher.paths == []
    assert bc.check_controller(str(bundle), "spec-2")["complete"] is False  # another lock: build again


def test_a_file_whose_sha256_changed_is_removed_with_the_sums(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    bc.seal_controller(str(bundle), "spec-1")
    model = bundle / "models" / "m.safetensors"
    stat = model.stat()
    model.write_bytes(b"MODEL BYTES" * 100)  # same size
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime: ctime tells
    found = bc.check_controller(str(bundle), "spec-1")
    assert found["complete"] is False and found["removed"] == ["models/m.safetensors"]
    assert not model.exists() and not (bundle / "SHA256SUMS").exists()
    assert (bundle / "wheelhouse" / "a-1.whl").exists()


def test_deep_hashes_every_file(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    bc.seal_controller(str(bundle), "spec-1")
    hasher = CountingHasher()
    assert bc.check_controller(str(bundle), "spec-1", deep=True, hasher=hasher)["complete"] is True
    assert len(hasher.paths) == len(FILES)


def test_a_link_in_the_cache_is_never_served(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    bc.seal_controller(str(bundle), "spec-1")
    target = bundle / "wheelhouse" / "a-1.whl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(elsewhere)
    found = bc.check_controller(str(bundle), "spec-1")
    assert found["removed"] == ["wheelhouse/a-1.whl"] and not os.path.lexists(target)
    assert elsewhere.exists()


def test_sums_naming_a_path_outside_are_refused(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    (bundle / "SHA256SUMS").write_text(f"{'0' * 64}  ../escape\n")
    with pytest.raises(bl.BundleError, match="not a path inside it"):
        bc.check_controller(str(bundle), "spec-1")


def host_listing(tmp_path):
    bundle = make_bundle(tmp_path / "cache", FILES)
    return bundle, bc.seal_controller(str(bundle), "spec-1")


def copy_needed(bundle, copy, need):
    for relative in need:
        (copy / relative).write_bytes((bundle / relative).read_bytes())


def copied_host(tmp_path):
    """(listing, the host's copy, the plan it was copied by) after a first plan and copy (not yet sealed)."""
    bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    plan = bc.plan_host(str(copy), listing)
    copy_needed(bundle, copy, plan["need"])
    return listing, copy, plan


def test_a_host_copies_only_what_it_lacks(tmp_path):
    bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    (copy / "stale.whl").write_bytes(b"old")
    plan = bc.plan_host(str(copy), listing)
    assert sorted(plan["need"]) == sorted(e["path"] for e in listing)
    assert plan["removed"] == ["stale.whl"]
    copy_needed(bundle, copy, plan["need"])
    assert bc.seal_host(str(copy), listing, plan["need"]) == len(listing)

    hasher = CountingHasher()
    again = bc.plan_host(str(copy), listing, hasher=hasher)
    assert again == {"need": [], "have": len(listing), "removed": [], "hashed": 0}
    assert hasher.paths == []


def test_a_host_file_with_other_bytes_is_copied_again(tmp_path):
    listing, copy, plan = copied_host(tmp_path)
    bc.seal_host(str(copy), listing, plan["need"])
    (copy / "models" / "m.safetensors").write_bytes(b"MODEL BYTES" * 100)
    (copy / "wheelhouse" / "a-1.whl").write_bytes(b"short")
    plan = bc.plan_host(str(copy), listing)
    assert sorted(plan["need"]) == ["models/m.safetensors", "wheelhouse/a-1.whl"]
    assert not (copy / "models" / "m.safetensors").exists()


def test_a_copy_that_arrives_wrong_is_removed_and_named(tmp_path):
    listing, copy, plan = copied_host(tmp_path)
    (copy / "wheelhouse" / "a-1.whl").write_bytes(b"wheel b")
    with pytest.raises(bl.BundleError, match="arrived with another sha256"):
        bc.seal_host(str(copy), listing, plan["need"])
    assert not (copy / "wheelhouse" / "a-1.whl").exists()


def test_a_link_in_the_host_copy_is_removed_not_followed(tmp_path):
    _bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a-1.whl").write_bytes(b"wheel a")
    (copy / "wheelhouse").symlink_to(outside)
    plan = bc.plan_host(str(copy), listing)
    assert "wheelhouse/a-1.whl" in plan["need"]
    assert not (copy / "wheelhouse").is_symlink() and (outside / "a-1.whl").exists()


def test_the_host_directory_must_be_roots_alone(tmp_path):
    copy = tmp_path / "host"
    copy.mkdir()
    os.chmod(copy, 0o777)  # noqa: S103 - the case under test
    with pytest.raises(bl.BundleError, match="not root's alone"):
        bc.check_host_dir(str(copy))


def test_small_files_travel_in_one_archive_checked_on_arrival(tmp_path):
    bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    plan = bc.plan_host(str(copy), listing)
    small, large = bc.split_need(listing, plan["need"], small=500)
    assert large == ["models/m.safetensors"] and "wheelhouse/a-1.whl" in small
    archive = bc.pack(str(bundle), small, str(tmp_path / "out" / "h.tar"))
    placed = bc.unpack(str(copy), archive, listing)
    assert sorted(placed) == sorted(small) and not os.path.exists(archive)
    for relative in small:
        assert (copy / relative).read_bytes() == (bundle / relative).read_bytes()


def test_an_archive_member_the_list_does_not_name_is_refused(tmp_path):
    import tarfile

    _bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    archive = tmp_path / "evil.tar"
    (tmp_path / "x").write_bytes(b"x")
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "x", arcname="../escape")
    with pytest.raises(bl.BundleError, match="does not name"):
        bc.unpack(str(copy), str(archive), listing)
    assert not (tmp_path / "escape").exists() and not archive.exists()


def test_an_archive_member_with_other_bytes_is_not_put_in_place(tmp_path):
    bundle, listing = host_listing(tmp_path)
    copy = tmp_path / "host"
    copy.mkdir()
    (bundle / "wheelhouse" / "a-1.whl").write_bytes(b"wheel b")  # changed after the listing was made
    archive = bc.pack(str(bundle), ["wheelhouse/a-1.whl"], str(tmp_path / "h.tar"))
    with pytest.raises(bl.BundleError, match="arrived with another sha256"):
        bc.unpack(str(copy), archive, listing)
    assert not (copy / "wheelhouse" / "a-1.whl").exists()


def test_a_model_download_lock_is_no_part_of_the_bundle(tmp_path):
    """model_file leaves .<file>.lock beside the model (it names the last holder, so it changes every run):
    listed, it would travel to every host again after each fill."""
    bundle = make_bundle(tmp_path / "cache", {**FILES, "models/.m.safetensors.lock": b"pid 1"})
    assert "models/.m.safetensors.lock" not in bl.read_sums(str(bundle))
    assert "models/m.safetensors" in bl.read_sums(str(bundle))


def test_prune_removes_what_no_lock_names_and_keeps_what_a_fill_uses(tmp_path):
    cache = tmp_path / "fleet"
    bundle = make_bundle(cache / "Linux-x86_64", FILES)
    bc.write_record(str(bundle), {"spec": "s", "files": {}})
    # Left by an older lock: a wheel and a whole repository no SHA256SUMS line names any more.
    (bundle / "wheelhouse" / "a-0.whl").write_bytes(b"old wheel" * 10)
    (bundle / "git" / "old.git").mkdir()
    (bundle / "git" / "old.git" / "HEAD").write_bytes(b"old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"not the cache's")
    (bundle / "models" / "link").symlink_to(outside)  # never followed: removed as itself
    half = cache / "Darwin-arm64"  # a fill that stopped before its SHA256SUMS: left whole for the next fill
    half.mkdir()
    (half / "part.whl").write_bytes(b"half")
    (cache / "outgoing").mkdir()
    (cache / "outgoing" / "0a1b.tar").write_bytes(b"t" * 5)
    (cache / "sources").mkdir()
    (cache / "sources" / "mirror.git").write_bytes(b"kept")
    removed, freed = bc.prune_controller(str(cache))
    assert sorted(removed) == ["Linux-x86_64/git/old.git/HEAD", "Linux-x86_64/models/link",
                               "Linux-x86_64/wheelhouse/a-0.whl", "outgoing/0a1b.tar"]  # fmt: skip
    assert freed == 90 + 3 + 5
    assert not (bundle / "git" / "old.git").exists()
    assert (outside / "keep").read_bytes() == b"not the cache's"
    assert bc.check_controller(str(bundle), "s")["complete"]  # every listed file and the record are there
    assert (half / "part.whl").exists() and (cache / "sources" / "mirror.git").exists()
    assert bc.prune_controller(str(cache)) == ([], 0)


def bundle_cli():
    """roles/offline_bundle/files/sdenv_bundle.py, the command make fleet-cache-prune runs."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "sdenv_bundle_cli", root / "roles" / "offline_bundle" / "files" / "sdenv_bundle.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_make_fleet_cache_prune_refuses_while_a_run_holds_the_cache(tmp_path, capsys):
    import sdenv_run_lock

    cli = bundle_cli()
    cache = tmp_path / "fleet"
    bundle = make_bundle(cache / "Linux-x86_64", FILES)
    (bundle / "old.whl").write_bytes(b"old")
    fd, _ = sdenv_run_lock.open_lock(str(cache))  # what make provision's fill holds while its run lasts
    try:
        assert sdenv_run_lock.try_flock(fd)
        sdenv_run_lock.write_record(fd, {"target": "provision", "controller_pid": 77, "controller": "ctl",
                                         "started": "2026-12-07 15:00:00 UTC"})  # fmt: skip
        assert cli.main(["prune-cache", "--cache-dir", str(cache)]) == 1
        assert capsys.readouterr().err == (
            f"sdenv: make provision, pid 77 on ctl, started at 2026-12-07 15:00:00 UTC is using the fleet cache "
            f"{cache}: run make fleet-cache-prune again after it ends.\n"
        )
        assert (bundle / "old.whl").exists()
    finally:
        os.close(fd)
    assert cli.main(["prune-cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "removed Linux-x86_64/old.whl" in out and "1 file no lock names any more" in out, out
    assert not (bundle / "old.whl").exists() and not (cache / "run.lock").exists()


def settings_inventory(directory, settings_text):
    """An inventory file with group_vars/all/settings.yml beside it, as the repository's inventory/ has."""
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "group_vars" / "all" / "settings.yml").write_text(settings_text, encoding="utf-8")
    inventory = directory / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n", encoding="utf-8")
    return inventory


def stale_cache(cache):
    bundle = make_bundle(cache / "Linux-x86_64", FILES)
    (bundle / "old.whl").write_bytes(b"old")
    return bundle


@pytest.mark.parametrize(
    "setting",
    ["{where}/fleet", "{{{{ lookup('ansible.builtin.env', 'SDT_CACHE_BASE') }}}}/fleet",
     "{{{{ sdt_base }}}}/fleet"],  # a path; the default's own form (the controller's environment); a variable
)  # fmt: skip
def test_make_fleet_cache_prune_prunes_the_cache_settings_yml_names(tmp_path, capsys, monkeypatch, setting):
    monkeypatch.setenv("SDT_CACHE_BASE", str(tmp_path))
    default_cache = (
        tmp_path / "home" / ".cache" / "sdenv" / "fleet"
    )  # what FLEET_CACHE_DIR's old default named
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kept = stale_cache(default_cache)
    bundle = stale_cache(tmp_path / "fleet")
    text = f'sdt_base: {tmp_path}\nsdenv_fleet_cache_dir: "{setting.format(where=tmp_path)}"\n'
    inventory = settings_inventory(tmp_path / "inventory", text)
    assert bundle_cli().main(["prune-cache", "--cache-dir", "", "--inventory", str(inventory)]) == 0
    out = capsys.readouterr().out
    assert f"pruned the fleet cache {tmp_path / 'fleet'}: 1 file no lock names any more" in out, out
    assert not (bundle / "old.whl").exists()
    assert (kept / "old.whl").exists()  # the default place was not the one settings.yml names


def test_make_fleet_cache_prune_without_the_setting_prunes_the_role_default(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bundle = stale_cache(tmp_path / "home" / ".cache" / "sdenv" / "fleet")
    inventory = settings_inventory(tmp_path / "inventory", "sdenv_fleet_cache: auto\n")
    assert bundle_cli().main(["prune-cache", "--inventory", str(inventory)]) == 0
    assert "1 file no lock names any more" in capsys.readouterr().out
    assert not (bundle / "old.whl").exists()


def test_fleet_cache_dir_given_to_make_wins_over_settings_yml(tmp_path, capsys):
    named = stale_cache(tmp_path / "settings-cache")
    given = stale_cache(tmp_path / "given")
    inventory = settings_inventory(
        tmp_path / "inventory", f"sdenv_fleet_cache_dir: {tmp_path}/settings-cache\n"
    )
    assert bundle_cli().main(["prune-cache", "--cache-dir", str(tmp_path / "given"), "--inventory",
                              str(inventory)]) == 0  # fmt: skip
    assert not (given / "old.whl").exists() and (named / "old.whl").exists()


def test_a_setting_only_a_play_can_render_is_one_sentence_asking_for_fleet_cache_dir(tmp_path, capsys):
    inventory = settings_inventory(
        tmp_path / "inventory", 'sdenv_fleet_cache_dir: "{{ ansible_env.HOME }}/c"\n'
    )
    assert bundle_cli().main(["prune-cache", "--inventory", str(inventory)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sdenv: sdenv_fleet_cache_dir in {tmp_path}/inventory/group_vars/all/settings.yml "
                          "({{ ansible_env.HOME }}/c) cannot be worked out outside a play"), err  # fmt: skip
    assert err.endswith("('ansible_env' is undefined): give the cache's path as FLEET_CACHE_DIR=.\n"), err
