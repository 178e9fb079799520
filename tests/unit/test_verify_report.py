"""The verify report: the printed table and the HTML page."""

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
