"""The pure parts of `make bench BENCH=fleet` (tests/bench/bench_fleet.py): each task's span from Ansible's
log_path timestamps, and the printed rows (ratios against their targets, the CPU floors that say why a time
ratio misses). The run itself (the fleet lab over SSH) is the bench."""

import textwrap

import pytest

from tests.bench import bench_fleet as bench

# ansible-core 2.19's log_path lines (its format: asctime p= u= n= level| message), a stdout callback's banners.
LOG = textwrap.dedent(
    """\
    2026-12-07 18:57:00,000 p=10 u=root n=ansible INFO| PLAY [Provision] ******
    2026-12-07 18:57:01,000 p=10 u=root n=ansible INFO| TASK [offline_bundle : Fill the fleet cache] ******
    2026-12-07 18:57:01,000 p=10 u=root n=ansible INFO| changed: [lab1 -> localhost]
    2026-12-07 18:57:02,000 p=10 u=root n=ansible INFO| [lab1] sdtckpt: downloading
    2026-12-07 18:57:11,500 p=10 u=root n=ansible INFO| TASK [webui : Clone] ******
    2026-12-07 18:57:11,500 p=10 u=root n=ansible INFO| changed: [lab1]
    2026-12-07 18:57:12,000 p=10 u=root n=ansible INFO| ok: [lab2]
    2026-12-07 18:57:14,000 p=10 u=root n=ansible INFO| RUNNING HANDLER [webui : Restart] ******
    2026-12-07 18:57:14,000 p=10 u=root n=ansible INFO| changed: [lab1]
    2026-12-07 18:57:15,000 p=10 u=root n=ansible INFO| TASK [webui : Clone] ******
    2026-12-07 18:57:15,000 p=10 u=root n=ansible INFO| skipping: [lab1]
    2026-12-07 18:57:16,250 p=10 u=root n=ansible INFO| ok: [lab2]
    2026-12-07 18:57:16,300 p=10 u=root n=ansible INFO| PLAY RECAP ******
    """
)


def test_a_task_runs_from_the_last_result_before_it_to_its_own_last_and_repeats_add_up(tmp_path):
    # The banner comes with a task's first result (display_skipped_hosts off), so the time before it, back to
    # the previous task's last result (not a progress line), is this task's.
    log = tmp_path / "ansible.log"
    log.write_text(LOG, encoding="utf-8")
    assert bench.task_spans(log) == {
        "offline_bundle : Fill the fleet cache": 0.0,
        "webui : Clone": 11.0 + 2.25,  # 18:57:01 -> 18:57:12, then 18:57:14 -> 18:57:16.25
        "webui : Restart": 2.0,
    }


def run(seconds, controller, hosts, upstream=1000, tasks=None, others=0.0):
    return {"upstream": upstream, "requests": 10, "repeated": {}, "seconds": seconds, "controller": controller,
            "hosts": hosts, "others": others, "tasks": tasks or {}}  # fmt: skip


def test_rows_give_each_ratio_against_its_target_and_the_cpu_floors():
    one = run(20.0, controller=10.0, hosts=10.0, tasks={"a": 1.0, "b": 2.0})
    many = run(60.0, controller=30.0, hosts=50.0, upstream=1040, tasks={"a": 1.5, "b": 2.0, "fill": 9.0})
    table = {name.strip(): (value, note) for name, value, note in bench.rows(4, one, many, cores=2)}
    assert table["ratio upstream 4 hosts / 1 host"] == ("1.040x", "target <= 1.05x: met")
    assert table["wall time 4 hosts / 1 host"] == ("3.00x", "60 s vs 20 s; target <= 1.5x: NOT met")
    assert table["CPU 4 hosts / 1 host"][0] == "4.00x"
    # Here: 80 CPU s on 2 cores is at least 40 s, 2x one host's 20 s. On 4 machines: the controller's 30 s on
    # its 2 cores (15 s) or one host's share 50/4 = 12.5 s, the larger: 0.75x.
    value, note = table["least time ratio on 2 cores"]
    assert value == "2.00x" and note.endswith("on 4 machines of their own: 0.75x"), note
    assert table["tasks only the fleet run has"][0] == "9.0 s"
    # The task only the fleet run has (the cache's fill) is the one that grew most.
    grew = [(name, value) for name, (value, _) in table.items() if name.startswith("grew:")]
    assert grew[:2] == [("grew: fill", "+9.0 s"), ("grew: a", "+0.5 s")], grew


@pytest.mark.parametrize(("upstream", "verdict"), [(1050, "met"), (1051, "NOT met")])
def test_the_bytes_target_is_met_up_to_and_including_1_05x(upstream, verdict):
    rows = bench.rows(4, run(10.0, 1.0, 1.0), run(10.0, 1.0, 1.0, upstream=upstream), cores=2)
    (note,) = [note for name, _, note in rows if name.startswith("ratio upstream")]
    assert note.endswith(f": {verdict}"), note


def test_the_run_without_the_fleet_cache_is_a_row_of_its_own_for_reference():
    one = run(20.0, controller=10.0, hosts=10.0)
    without = run(70.0, controller=36.0, hosts=44.0, upstream=4000)
    rows = bench.rows(4, one, run(60.0, 30.0, 50.0), cores=2, without=without)
    (row,) = [row for row in rows if row[0] == "4 hosts without the fleet cache / 1 host"]
    assert row[1:] == ("time 3.50x, upstream 4.00x", "70 s; CPU 4.00x")
    assert not [r for r in bench.rows(4, one, run(60.0, 30.0, 50.0), cores=2) if "without" in r[0]]
