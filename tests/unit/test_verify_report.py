"""The verify report: the printed table and the HTML page."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verify"))

import verify_report

ROWS = [
    {"check": "formula cmake", "host": "studio-1", "result": "PASS", "detail": "cmake 3.30.0"},
    {
        "check": "model glasses-2",
        "host": "studio-1",
        "result": "FAIL",
        "detail": "sha256 <abc> & wrong " * 20,
    },
    {"check": "pinned known-good snapshot", "host": "mba", "result": "NOT PROVISIONED", "detail": "no store"},
]


def test_table_cuts_passing_details_and_shows_every_failing_one_whole():
    rows = [{**ROWS[0], "detail": "cmake 3.30.0 " * 30}, *ROWS[1:]]
    text = verify_report.table(rows, width=100)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "host", "result", "detail"]
    assert all(len(line) <= 100 for line in lines)
    assert lines[2].endswith("...") and lines[2].startswith("formula cmake")
    assert lines[3].startswith("model glasses-2") and "FAIL" in lines[3]
    failing = [line for line in lines[3:] if not line.startswith("pinned known-good")]
    # "model glasses-2", the host, FAIL, then the detail whole
    assert " ".join(" ".join(failing).split()[4:]) == " ".join(ROWS[1]["detail"].split())
    assert lines[-1].startswith("pinned known-good snapshot") and lines[-1].endswith("no store")


def test_a_failing_detail_goes_under_its_row_when_the_detail_column_is_narrow():
    long_check = {**ROWS[1], "check": "ui-config.json customscript/sampler.py/txt2img/Sampling method/value"}
    text = verify_report.table([long_check], width=100)
    lines = text.splitlines()
    assert lines[2].startswith(long_check["check"]) and lines[2].split()[-2:] == ["studio-1", "FAIL"]
    assert all(line.startswith("    ") and len(line) <= 100 for line in lines[3:])
    assert " ".join(" ".join(lines[3:]).split()) == " ".join(ROWS[1]["detail"].split())


def test_summary_counts_failures_first():
    assert verify_report.summarize(ROWS) == "1 fail, 1 not provisioned, 1 pass"


def test_html_escapes_and_links_images(tmp_path):
    image = tmp_path / "images" / "mba" / "txt2img-1woman.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    page = Path(
        verify_report.write_html(
            ROWS,
            [{"host": "mba", "name": "txt2img 1woman", "path": str(image), "prompt": "<lora:x:1>"}],
            "t",
            str(tmp_path),
        )
    ).read_text()
    assert "sha256 &lt;abc&gt; &amp; wrong" in page
    assert '<img src="images/mba/txt2img-1woman.png"' in page
    assert "&lt;lora:x:1&gt;" in page
    assert page.count("<tr class=") == len(ROWS)
    assert '<tr class="NOT-PROVISIONED">' in page


def test_an_absent_account_is_counted_first_and_shown_as_a_failure():
    rows = [
        {"check": "package cmake", "host": "h", "result": "PASS", "detail": "3.25"},
        {
            "check": "WebUI at the pinned commit",
            "host": "h",
            "result": "NOT PROVISIONED",
            "detail": "no dummy",
        },
        {"check": "dummy user dummy exists", "host": "h", "result": "ABSENT", "detail": "no account dummy"},
    ]
    assert verify_report.summarize(rows) == "1 absent, 1 not provisioned, 1 pass"
    assert '<tr class="ABSENT">' in verify_report.html_page(rows, [], "t", ".")
    assert ".FAIL,.ERROR,.ABSENT{background:#fbe3e3}" in verify_report.html_page(rows, [], "t", ".")


# --- Root causes, the terminal text, checks.json, the page's layout -----------------------------------------

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "verify_runs"


def row(check, result, depends=(), host="h", detail="d"):
    return {
        "check": check,
        "id": check,
        "host": host,
        "result": result,
        "detail": detail,
        "depends_on": list(depends),
    }


def test_a_failing_parent_folds_its_failing_children_and_grandchildren():
    rows = [
        row("user", "PASS"),
        row("webui_commit", "FAIL", ["user"], detail="no clone"),
        row("repository:a", "FAIL", ["webui_commit"]),
        row("venv_torch", "FAIL", ["webui_commit"]),
        row("live:server_starts", "FAIL", ["venv_torch"]),
        row("config_json:x", "PASS", ["webui_commit"]),
        row("snapshot", "FAIL", ["user"]),
        row("model:a", "NOT PROVISIONED", ["user"]),
    ]
    found = verify_report.causes(rows)
    assert [(root["id"], [r["id"] for r in folded]) for root, folded in found] == [
        ("webui_commit", ["repository:a", "venv_torch", "live:server_starts"]),
        ("snapshot", []),
    ]


def test_a_dependency_names_a_check_or_one_row_and_hosts_stay_apart():
    rows = [
        row("live:server_starts", "FAIL", host="a"),
        row("live:txt2img", "FAIL", ["live:server_starts"], host="a"),
        row("live:server_starts", "PASS", host="b"),
        row("live:txt2img", "FAIL", ["live:server_starts"], host="b"),
        row("model:x", "FAIL", host="b"),
        row("live:loras", "FAIL", ["model"], host="b"),
    ]
    found = verify_report.causes(rows)
    assert [(r["host"], r["id"], [f["id"] for f in folded]) for r, folded in found] == [
        ("a", "live:server_starts", ["live:txt2img"]),
        ("b", "model:x", ["live:loras"]),
        ("b", "live:txt2img", []),
    ]


def test_the_absent_account_folds_every_row_that_could_not_be_checked_without_it():
    rows = [
        row("user", "ABSENT", detail="no account"),
        row("webui_commit", "NOT PROVISIONED", ["user"]),
        row("linux_package:git", "PASS"),
        row("python", "NOT PROVISIONED", ["record"]),
        row("record", "NOT PROVISIONED", ["user"]),
        row("snapshot", "NOT PROVISIONED", ["linux_package"]),
    ]
    [(root, folded)] = verify_report.causes(rows)
    assert root["id"] == "user" and [r["id"] for r in folded] == ["webui_commit", "python", "record"]


def test_the_terminal_text_leads_with_the_root_cause_then_the_table():
    recorded = json.loads((RUNS / "failing.json").read_text())
    text = verify_report.terminal_text(recorded["rows"], "/r/index.html", "/r/junit.xml")
    lines = text.splitlines()
    assert lines[0] == "studio-1: 37 of 53 checks fail, from 3 root causes (37 fail, 16 pass)"
    assert lines[1].split() == ["FAIL", "WebUI", "at", "the", "pinned", "commit,", "clean", "tree"]
    assert "34 more checks follow from it" in text and text.index("34 more checks") < text.index("check  ")
    assert lines[-1] == "Report: /r/index.html"


def test_checks_json_has_a_schema_version_and_names_each_rows_root_cause(tmp_path):
    recorded = json.loads((RUNS / "failing.json").read_text())
    path = verify_report.write_checks_json(recorded["rows"], [], str(tmp_path))
    doc = json.loads(Path(path).read_text())
    assert doc["schema_version"] == verify_report.SCHEMA_VERSION == 1
    assert doc["hosts"] == {"studio-1": {"passed": False, "summary": "37 fail, 16 pass"}}
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["webui_commit"]["root_cause"] is True and by_id["webui_commit"]["caused_by"] is None
    assert by_id["repository:BLIP"]["caused_by"] == "webui_commit"
    assert by_id["repository:BLIP"]["depends_on"] == ["webui_commit"]
    assert by_id["user"]["root_cause"] is False and by_id["user"]["result"] == "PASS"
    assert set(doc["checks"][0]) == {
        "check",
        "id",
        "host",
        "result",
        "detail",
        "depends_on",
        "root_cause",
        "caused_by",
    }


def test_the_page_puts_summary_causes_images_then_the_folded_table_and_wraps_details(tmp_path):
    recorded = json.loads((RUNS / "failing-live.json").read_text())
    image = {**recorded["images"][0], "path": str(tmp_path / "images" / "studio-1" / "a.png")}
    page = verify_report.html_page(recorded["rows"], [image], "t", str(tmp_path))
    order = [page.index(f'id="{part}-0"') for part in ("summary", "failures", "images", "table")]
    assert order == sorted(order)
    assert '<details class="all" id="table-0">' in page
    assert "overflow-wrap:anywhere" in page and "white-space:pre-wrap" in page
    assert "Model hash: 6ce0161689" in page  # the infotext beside its image


def test_several_hosts_get_an_overview_of_their_summary_lines_first():
    rows = [row("user", "PASS", host="a"), row("user", "ABSENT", host="b", detail="no account")]
    page = verify_report.html_page(rows, [], "t", ".")
    overview = page.index('<ul class="overview">')
    assert overview < page.index('id="host-0"') < page.index('id="host-1"')
    assert page.index("a: everything in place (1 pass)") < page.index('id="host-0"')
    assert page.index("b: 1 of 1 checks fail, from 1 root cause (1 absent)") < page.index('id="host-0"')
    assert '<li class="bad"><a href="#host-1">' in page
    one_host = verify_report.html_page(rows[:1], [], "t", ".")
    assert "overview" not in one_host.split("</style>")[1]


def test_a_host_where_nothing_fails_but_not_all_passes_is_not_called_in_place():
    rows = [row("user", "PASS"), row("snapshot", "NOT PROVISIONED", detail="no store")]
    assert verify_report.host_summary("h", rows) == (
        "h: nothing fails, but 1 of 2 checks did not pass (1 not provisioned, 1 pass)"
    )
    assert verify_report.verdict(rows) == "open" and verify_report.verdict(rows[:1]) == "good"
    assert '<p class="summary open" id="summary-0">' in verify_report.html_page(rows, [], "t", ".")


def test_junit_has_one_testsuite_per_host_with_its_own_counts(tmp_path):
    import xml.etree.ElementTree as ET

    rows = [
        {**ROWS[0], "seconds": 0.25},
        {**ROWS[1], "seconds": 1.5},
        ROWS[2],
        {"check": "formula cmake", "host": "mba", "result": "PASS", "detail": "cmake 3.31.0", "seconds": 0.5},
        {"check": "model glasses-2", "host": "mba", "result": "PENDING", "detail": "fetch it by hand"},
        {"check": "webui commit", "host": "mba", "result": "ERROR", "detail": "ssh: Connection reset"},
    ]
    path = verify_report.write_junit(rows, str(tmp_path / "junit.xml"), "2026-12-07T15:00:00")
    root = ET.parse(path).getroot()  # noqa: S314 - the file written just above
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6", "failures": "1", "errors": "1", "skipped": "2"}  # fmt: skip
    suites = root.findall("testsuite")
    assert [suite.get("name") for suite in suites] == ["studio-1", "mba"]  # the table's order
    studio, mba = suites
    assert {k: studio.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "2", "failures": "1", "errors": "0", "skipped": "0", "time": "1.750"}  # fmt: skip
    assert [case.get("name") for case in studio] == ["formula cmake", "model glasses-2"]
    assert {case.get("classname") for case in studio} == {"sdenv.verify.studio-1"}
    failure = studio[1].find("failure")
    assert failure.get("type") == "FAIL" and failure.text == ROWS[1]["detail"]
    assert studio[0].find("failure") is None and studio[0].find("system-out").text == "cmake 3.30.0"
    assert {k: mba.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "4", "failures": "0", "errors": "1", "skipped": "2"}  # fmt: skip
    by_name = {case.get("name"): case for case in mba}
    assert by_name["pinned known-good snapshot"].find("skipped").get("message") == "NOT PROVISIONED: no store"
    assert by_name["model glasses-2"].find("skipped").get("message") == "PENDING: fetch it by hand"
    assert by_name["webui commit"].find("error").get("message") == "ssh: Connection reset"
    assert not (tmp_path / "junit.xml.tmp").exists()
