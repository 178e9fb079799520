"""The controller's copy of the hosts' preflight facts is pruned by age (plugins/module_utils/sdenv_facts_cache.py)."""

import json
import os
from pathlib import Path

import sdenv_facts_cache as cache

DAY = 86400
NOW = 1_800_000_000


def aged(path, days, text="{}"):
    path.write_text(text)
    os.utime(path, (NOW - days * DAY, NOW - days * DAY))
    return path


def test_copies_no_run_wrote_for_30_days_go_and_recent_ones_stay(tmp_path):
    aged(tmp_path / "gone-host.json", 31)
    aged(tmp_path / "localhost.json", 0)
    aged(tmp_path / "lab1.json", 29)
    assert cache.prune(tmp_path, now=NOW) == ["gone-host.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab1.json", "localhost.json"]


def test_a_killed_writes_temporary_file_goes_after_a_day_and_a_fresh_one_stays(tmp_path):
    aged(tmp_path / "localhost.123.tmp", 2)
    aged(tmp_path / "lab1.456.tmp", 0)
    assert cache.prune(tmp_path, now=NOW) == ["localhost.123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["lab1.456.tmp"]


def test_nothing_but_the_caches_own_files_is_touched(tmp_path):
    target = aged(tmp_path.parent / f"{tmp_path.name}-elsewhere.json", 90)
    (tmp_path / "link.json").symlink_to(target)
    os.utime(tmp_path / "link.json", (NOW - 90 * DAY, NOW - 90 * DAY), follow_symlinks=False)
    (tmp_path / "old.json.d").mkdir()
    aged(tmp_path / "notes.txt", 90)
    subdir = tmp_path / "dir.json"
    subdir.mkdir()
    os.utime(subdir, (NOW - 90 * DAY, NOW - 90 * DAY))
    assert cache.prune(tmp_path, now=NOW) == []
    assert target.exists() and (tmp_path / "link.json").is_symlink() and (tmp_path / "notes.txt").exists()


def test_no_cache_yet_is_nothing_to_prune(tmp_path):
    assert cache.prune(tmp_path / "missing", now=NOW) == []


def test_the_preflight_prunes_when_it_writes_a_hosts_copy(tmp_path):
    """plugins/action/sdenv_preflight.py: writing this run's copy also removes the month-old ones."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "sdenv_preflight_action", root / "plugins/action/sdenv_preflight.py"
    )
    action = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(action)
    old = tmp_path / "gone-host.json"
    old.write_text("{}")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    action.ActionModule._write_cache(tmp_path / "localhost.json", {"system": "Linux"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["localhost.json"]
    assert json.loads((tmp_path / "localhost.json").read_text()) == {"system": "Linux"}
