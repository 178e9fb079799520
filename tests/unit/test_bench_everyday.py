"""The pure parts of `make bench BENCH=everyday` (tests/bench/bench_everyday.py): reading ansible.builtin.junit's
task durations, telling host round trips from controller-only tasks, the slowest tasks over rotating runs, the
PLAY RECAP's changed= and the printed table. The run itself (a provisioned fixture account) is the bench."""

import textwrap

import pytest

from tests.bench import bench_everyday as bench

# The shape ansible-core 2.19's junit callback writes (JUNIT_HIDE_TASK_ARGUMENTS=true), cut down: a fact
# gathering (its classname is the play's line), a looped module, a debug, a skipped task.
JUNIT = textwrap.dedent(
    """\
    <?xml version="1.0" ?>
    <testsuites disabled="0" errors="0" failures="0" tests="4" time="3.5">
      <testsuite disabled="0" errors="0" failures="0" name="provision" skipped="1" tests="4" time="3.5">
        <testcase classname="{d}/play.yml:2" name="[localhost] Provision it: Gathering Facts" time="1.25">
          <system-out>{{"ansible_facts": {{}}, "changed": false}}</system-out>
        </testcase>
        <testcase classname="{d}/tasks.yml:1" name="[localhost] Provision it: webui : Clone: each repo" time="2.0">
          <system-out>{{"changed": true, "results": [{{"item": 1}}, {{"item": 2}}, {{"item": 3}}]}}</system-out>
        </testcase>
        <testcase classname="{d}/tasks.yml:7" name="[localhost] Provision it: webui : Say it" time="0.01">
          <system-out>{{"msg": "hello"}}</system-out>
        </testcase>
        <testcase classname="{d}/tasks.yml:11" name="[localhost] Provision it: webui : Maybe" time="0.02">
          <skipped message="Conditional result was False"/>
        </testcase>
      </testsuite>
    </testsuites>
    """
)
PLAY = "---\n- name: Provision it\n  hosts: all\n  become: true\n  roles: [webui]\n"
TASKS = textwrap.dedent(
    """\
    - name: "Clone: each repo"
      ansible.builtin.git:
        repo: "{{ item }}"
      loop: [1, 2, 3]
      register: cloned

    - name: Say it
      when: cloned is changed
      ansible.builtin.debug:
        msg: hello
    - name: Maybe
      webui_git_tree:
        path: /x
      when: false
    """
)


def recorded(tmp_path):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "tasks.yml").write_text(TASKS)
    return bench.parse_junit(JUNIT.format(d=tmp_path))


def test_parse_junit_reads_each_task_its_time_status_place_and_loop_items(tmp_path):
    tasks = recorded(tmp_path)
    assert [(t["name"], t["seconds"], t["status"], t["items"]) for t in tasks] == [
        ("Gathering Facts", 1.25, "ok", 1),
        ("webui : Clone: each repo", 2.0, "ok", 3),
        ("webui : Say it", 0.01, "ok", 1),
        ("webui : Maybe", 0.02, "skipped", 1),
    ]
    assert tasks[1]["where"] == f"{tmp_path}/tasks.yml:1"
    assert [t["changed"] for t in tasks] == [False, True, False, False]
    assert bench.changed_tasks([tasks, tasks]) == [f"webui : Clone: each repo ({tmp_path}/tasks.yml:1)"]


def test_task_action_finds_the_module_past_task_keywords():
    lines = TASKS.splitlines()
    assert bench.task_action(lines, 1) == "git"
    assert bench.task_action(lines, 7) == "debug"  # `when:` comes first
    assert bench.task_action(lines, 11) == "webui_git_tree"  # a module without a collection prefix
    assert bench.task_action(PLAY.splitlines(), 2) == "setup"  # a play's line: its fact gathering
    assert bench.task_action(lines, 99) == ""


def test_round_trips_count_loop_items_on_the_host_and_keep_controller_tasks_apart(tmp_path):
    # facts (1) + the git loop (3 items) reach the host; the debug stays on the controller; one skipped.
    assert bench.round_trips(recorded(tmp_path)) == (4, 1, 1)
    assert bench.host_actions(recorded(tmp_path)) == {"git": 3, "setup": 1}


def test_slowest_ranks_tasks_by_their_median_over_the_runs():
    def run(**times):
        return [{"name": n, "where": f"/r/t.yml:{i}", "seconds": s} for i, (n, s) in enumerate(times.items())]

    runs = [run(a=1.0, b=5.0, c=0.5), run(a=9.0, b=4.0, c=0.4), run(a=2.0, b=6.0, c=0.6)]
    assert bench.slowest(runs, 2) == [("b (/r/t.yml:1)", 5.0), ("a (/r/t.yml:0)", 2.0)]
    assert bench.task_seconds(runs) == pytest.approx(8.6)  # the median of the sums 6.5, 13.4, 8.6


def test_recap_changed_sums_the_host_lines_and_is_none_without_a_recap():
    recap = (
        "PLAY RECAP *****\n"
        "localhost                  : ok=62   changed=0    unreachable=0    failed=0    skipped=16\n"
        "other                      : ok=60   changed=2    unreachable=0    failed=0    skipped=16\n"
    )
    assert bench.recap_changed(recap) == 2
    assert bench.recap_changed("Finished without errors on 1 host.") is None


def test_table_prints_wall_floor_ratio_and_the_slowest_tasks():
    rows = [
        {"target": "provision", "wall": 36.4, "floor": 1.3, "tasks": 30.12, "changed": 0, "trips": (57, 18, 18),
         "slowest": [("dummy_user : Install sudo (roles/x.yml:3)", 3.43)]},
        {"target": "rollback of one file", "wall": 9.0, "floor": 0.0, "tasks": 4.0, "changed": None,
         "trips": (9, 6, 0), "slowest": []},
    ]  # fmt: skip
    lines = bench.table(rows).splitlines()
    assert lines[0].split() == ["target", "wall", "s", "floor", "s", "ratio", "in", "tasks", "s", "changed",
                                "host/ctl/skip", "tasks"]  # fmt: skip
    assert lines[2].split() == ["provision", "36.40", "1.30", "28.0x", "30.12", "0", "57/18/18"]
    assert lines[3].split() == ["3.43", "s", "dummy_user", ":", "Install", "sudo", "(roles/x.yml:3)"]
    # No floor measured: no ratio, not a division by zero; no recap: an empty changed column.
    assert lines[4].split() == ["rollback", "of", "one", "file", "9.00", "0.00", "-", "4.00", "9/6/0"]


def test_inventory_account_reads_the_one_hosts_account_and_webui_dir():
    text = textwrap.dedent(
        """\
        all:
          hosts:
            localhost:
              ansible_connection: local
              sdenv_user_name: sdtabc123
        """
    )
    assert bench.inventory_account(text) == ("sdtabc123", None)
    nested = textwrap.dedent(
        """\
        all:
          children:
            lab:
              hosts:
                box: {sdenv_user_name: sdtdef, sdenv_webui_dir: /srv/sdtdef/webui}
        """
    )
    assert bench.inventory_account(nested) == ("sdtdef", "/srv/sdtdef/webui")
    templated = "all:\n  hosts:\n    h: {sdenv_user_name: sdt1, sdenv_webui_dir: '{{ sdenv_user_home }}/w'}\n"
    assert bench.inventory_account(templated) == ("sdt1", None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("all:\n  hosts:\n    a: {sdenv_user_name: x}\n    b: {sdenv_user_name: y}\n", "names 2 hosts"),
        ("all:\n  hosts: {}\n", "names 0 hosts"),
        ("all:\n  hosts:\n    a: {ansible_connection: local}\n", "no literal sdenv_user_name"),
        (
            'all:\n  hosts:\n    a: {sdenv_user_name: \'{{ lookup("env", "U") }}\'}\n',
            "no literal sdenv_user_name",
        ),
    ],
)
def test_inventory_account_refuses_other_than_one_host_or_no_literal_account(text, says):
    with pytest.raises(ValueError, match=says):
        bench.inventory_account(text)
