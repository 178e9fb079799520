"""Retention: keep-last, hourly/daily/weekly buckets by age, pinned always kept."""

import pytest
import snapshot_retention as r

H = 3600 * 10**9
D = 24 * H
NOW = 1_800_000_000 * 10**9  # a fixed "now" keeps the bucket arithmetic deterministic


def snaps(ages_ns, pinned=()):
    return [{"id": f"s{i:03d}", "time_ns": NOW - a, "pinned": i in pinned} for i, a in enumerate(ages_ns)]


def kept_ids(keep):
    return {k["id"] for k in keep}


def test_keep_last_keeps_newest_n_and_nothing_else_when_buckets_are_off():
    s = snaps([i * H for i in range(10)])
    keep, forget = r.plan(
        s, NOW, {"keep_last": 3, "keep_hourly_hours": 0, "keep_daily_days": 0, "keep_weekly_weeks": 1}
    )
    assert kept_ids(keep) == {"s000", "s001", "s002"}
    assert len(forget) == 7


def test_hourly_keeps_one_per_hour_the_newest():
    # Four snapshots 10 minutes apart in the same hour plus one two hours back.
    base = NOW - (NOW % H) - H  # start of the previous full hour
    s = [{"id": f"m{i}", "time_ns": base + i * 600 * 10**9} for i in range(4)]
    s.append({"id": "old", "time_ns": base - 2 * H})
    keep, _ = r.plan(s, NOW, {"keep_last": 0})
    assert kept_ids(keep) == {"m3", "old"}


def test_daily_then_weekly_by_age():
    # NOW is 08:00 UTC: the five at 2 days + 0..4 h share one day; 40 d and 40 d + 1 h share one week.
    ages = [2 * D + k * H for k in range(5)] + [40 * D, 40 * D + H, 60 * D]
    keep, forget = r.plan(snaps(ages), NOW, {"keep_last": 0})
    assert kept_ids(keep) == {"s000", "s005", "s007"}
    assert {f["id"] for f in forget} == {"s001", "s002", "s003", "s004", "s006"}
    reasons = {k["id"]: k["reasons"] for k in keep}
    assert reasons["s000"] == ["daily"] and reasons["s005"] == ["weekly"]


def test_weekly_limit_forgets_older_weeks():
    keep, forget = r.plan(snaps([100 * D, 200 * D]), NOW, {"keep_last": 0, "keep_weekly_weeks": 20})
    assert kept_ids(keep) == {"s000"}
    assert [f["id"] for f in forget] == ["s001"]


def test_pinned_always_kept_with_reason():
    keep, forget = r.plan(
        snaps([300 * D, 300 * D + H], pinned={1}), NOW, {"keep_last": 0, "keep_weekly_weeks": 4}
    )
    assert kept_ids(keep) == {"s001"}
    assert "pinned" in keep[0]["reasons"]
    assert [f["id"] for f in forget] == ["s000"]


def test_future_snapshot_is_not_forgotten_by_a_clock_change():
    keep, _ = r.plan([{"id": "future", "time_ns": NOW + 5 * D}], NOW, {"keep_last": 0})
    assert kept_ids(keep) == {"future"}


@pytest.mark.parametrize(
    "bad", [{"keep_lats": 1}, {"keep_last": -1}, {"keep_last": "3"}, {"keep_last": True}]
)
def test_bad_policy_is_refused_with_the_key_named(bad):
    with pytest.raises(r.RetentionError, match="keep_la"):
        r.plan([], NOW, bad)
