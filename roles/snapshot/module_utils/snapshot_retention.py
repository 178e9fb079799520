"""Which snapshots a retention policy keeps: keep-last N, hourly, daily, weekly, and every pinned one.

Time Machine's rule (hourly for 24 h, daily for a month, weekly after that) expressed as buckets: a
snapshot is kept when it is the newest of its bucket, and the bucket's width depends on the snapshot's age.
A pure function of (snapshots, now, policy) so it is tested without a store.
"""

from __future__ import annotations

DEFAULT_POLICY = {
    "keep_last": 10,
    "keep_hourly_hours": 24,
    "keep_daily_days": 30,
    # 0 keeps one snapshot per week forever, as Time Machine does until the disk is full.
    "keep_weekly_weeks": 0,
}

_HOUR = 3600 * 10**9
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
# 1970-01-01 was a Thursday; shifting by 3 days makes week buckets start on Monday 00:00 UTC (ISO weeks).
_WEEK_SHIFT = 3 * _DAY


class RetentionError(ValueError):
    """A policy value that cannot be used; the message says which and what is expected."""


def normalize_policy(policy: dict | None) -> dict:
    """Fill in defaults and refuse unknown keys or values that are not whole numbers >= 0."""
    result = dict(DEFAULT_POLICY)
    for key, value in (policy or {}).items():
        if key not in DEFAULT_POLICY:
            raise RetentionError(
                f"Unknown retention setting {key!r}: expected one of {', '.join(sorted(DEFAULT_POLICY))}."
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RetentionError(f"Retention setting {key} is {value!r}: expected a whole number >= 0.")
        result[key] = value
    return result


def plan(snapshots: list[dict], now_ns: int, policy: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Split snapshots into (keep, forget), each item {"id", "reasons"} ordered newest first.

    Each snapshot dict needs "id", "time_ns" and optionally "pinned". Snapshots from the future (a clock
    that went backwards) are treated as age 0 so a clock change never deletes them.
    """
    pol = normalize_policy(policy)
    ordered = sorted(snapshots, key=lambda s: (s["time_ns"], s["id"]), reverse=True)
    reasons: dict[str, list[str]] = {s["id"]: [] for s in ordered}
    seen_buckets: set[tuple[str, int]] = set()
    for position, snap in enumerate(ordered):
        why = reasons[snap["id"]]
        if snap.get("pinned"):
            why.append("pinned")
        if position < pol["keep_last"]:
            why.append(f"last {pol['keep_last']}")
        age = max(0, now_ns - snap["time_ns"])
        t = snap["time_ns"]
        if age < pol["keep_hourly_hours"] * _HOUR:
            bucket = ("hourly", t // _HOUR)
        elif age < pol["keep_daily_days"] * _DAY:
            bucket = ("daily", t // _DAY)
        elif pol["keep_weekly_weeks"] == 0 or age < pol["keep_weekly_weeks"] * _WEEK:
            bucket = ("weekly", (t + _WEEK_SHIFT) // _WEEK)
        else:
            bucket = None
        # Newest first, so the first snapshot seen in a bucket is the newest of it.
        if bucket is not None and bucket not in seen_buckets:
            seen_buckets.add(bucket)
            why.append(bucket[0])
    keep = [{"id": s["id"], "reasons": reasons[s["id"]]} for s in ordered if reasons[s["id"]]]
    forget = [{"id": s["id"], "reasons": []} for s in ordered if not reasons[s["id"]]]
    return keep, forget
