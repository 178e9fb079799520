"""The report of one `make verify` run: the text printed at the end, checks.json, the HTML page and junit.xml.

A row is {"check", "id", "host", "result", "detail", "depends_on"}; result is PASS, FAIL, ERROR, "NOT
PROVISIONED" (the lock or settings define no such thing yet, or the dummy account it belongs to is not
there, so there is nothing to check: said plainly, never shown as a pass) or ABSENT (the dummy account row on
a host where it and everything of it are gone, e.g. after make remove-dummy: verify fails, because nothing is
in place) or PENDING (a model the lock gives neither URL nor pin for: the user fetches it by hand; not a
failure). `depends_on` names the checks the row needs in place (tests/verify declares them with
`@check(..., depends=...)`): a failing row under a failing one is a consequence, not a cause, and is folded
under its root cause, so one missing account or one failed clone reads as one problem, not thirty.

The page reads like a dashboard, per host: the summary line, the root causes with what follows from them,
the generated images beside their infotexts, then every row (folded). The terminal text leads the same way.
checks.json (schema in README.md, "Verifying a host") is for tools. junit.xml is for CI: one <testsuite> per
host, so a fleet's report reads as one section per host there too (pytest's own --junitxml would put every
host's checks into one suite, told apart only by a test id).
"""

import html
import json
import os
import shutil
import textwrap
import xml.etree.ElementTree as ET

from sdenv_i18n import _, ngettext

SCHEMA_VERSION = 1
RESULT_ORDER = {"ABSENT": 0, "FAIL": 0, "ERROR": 0, "PENDING": 1, "NOT PROVISIONED": 1, "SKIP": 2, "PASS": 3}
BAD = {"FAIL", "ERROR", "ABSENT"}


def summarize(rows):
    counts = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return ", ".join(f"{counts[k]} {k.lower()}" for k in sorted(counts, key=lambda k: RESULT_ORDER.get(k, 9)))


def hosts_of(rows):
    return list(dict.fromkeys(row["host"] for row in rows))


def causes(rows):
    """The failures of one run grouped by root cause: [(root row, [rows that follow from it])], the cause
    with the most consequences first, then in table order. A root is a failing row none of whose
    dependencies (transitively) fails on its host; every other row that is not a pass and has a failing
    dependency is folded under the root its first failing dependency leads to."""
    by_host = {}
    for row in rows:
        by_host.setdefault(row["host"], []).append(row)

    def matches(dependency, row):
        return row.get("id") == dependency or (row.get("id") or "").split(":", 1)[0] == dependency

    def root_of(row, seen):
        """The root cause of a failing dependency of `row`, or None when every dependency holds. A dependency
        that was not checked (NOT PROVISIONED) passes its own root on: the python row needs the record, which
        needs the account."""
        for dependency in row.get("depends_on") or []:
            for parent in by_host[row["host"]]:
                if parent is row or id(parent) in seen or parent["result"] in ("PASS", "SKIP"):
                    continue
                if matches(dependency, parent):
                    root = root_of(parent, seen | {id(parent)})
                    if root is None and parent["result"] in BAD:
                        root = parent
                    if root is not None:
                        return root
        return None

    groups, order = {}, []
    for row in rows:
        if row["result"] == "PASS":
            continue
        root = root_of(row, {id(row)})
        if root is None:
            if row["result"] in BAD:
                groups.setdefault(id(row), [row, []])
                order.append(id(row))
            continue
        groups.setdefault(id(root), [root, []])[1].append(row)
    order = list(dict.fromkeys(order))
    ranked = sorted(order, key=lambda key: -len(groups[key][1]))
    return [(groups[key][0], groups[key][1]) for key in ranked]


def host_summary(host, rows):
    """One line: the verdict, then the counts."""
    bad = [row for row in rows if row["result"] in BAD]
    if all(row["result"] == "PASS" for row in rows):
        return _("{host}: everything in place ({counts})").format(host=host, counts=summarize(rows))
    if not bad:  # nothing fails, but not everything was checked (NOT PROVISIONED) or is done (PENDING)
        other = sum(1 for row in rows if row["result"] != "PASS")
        return _("{host}: nothing fails, but {other} of {total} checks did not pass ({counts})").format(
            host=host, other=other, total=len(rows), counts=summarize(rows)
        )
    roots = len(causes(rows))
    return ngettext(
        "{host}: {bad} of {total} checks fail, from {roots} root cause ({counts})",
        "{host}: {bad} of {total} checks fail, from {roots} root causes ({counts})",
        roots,
    ).format(host=host, bad=len(bad), total=len(rows), roots=roots, counts=summarize(rows))


def one_line(text):
    return " ".join(str(text).split())


# --- The terminal -----------------------------------------------------------------------------------------


def table(rows, width=None):
    """A plain-text table. A passing row's detail is cut to the terminal width (the HTML page has it whole);
    every other row's detail is shown whole, wrapped under its detail column (or under the row, indented,
    when that column is too narrow to read), because it says what is wrong and what to do."""
    width = width or shutil.get_terminal_size((160, 20)).columns
    headers = ("check", "host", "result", "detail")
    cols = [max([len(h)] + [len(str(r[h])) for r in rows]) for h in headers[:3]]
    lines = [f"{headers[0]:<{cols[0]}}  {headers[1]:<{cols[1]}}  {headers[2]:<{cols[2]}}  {headers[3]}"]
    lines.append("-" * min(width, len(lines[0]) + 40))
    indent = sum(cols) + 6
    room = width - indent
    for row in rows:
        detail = one_line(row["detail"])
        head = f"{row['check']:<{cols[0]}}  {row['host']:<{cols[1]}}  {row['result']:<{cols[2]}}  "
        if row["result"] == "PASS":
            cut = max(room, 30)
            lines.append((head + (detail if len(detail) <= cut else detail[: cut - 3] + "...")).rstrip())
        elif room >= 40:
            wrapped = textwrap.wrap(detail, room, break_on_hyphens=False) or [""]
            lines.append((head + wrapped[0]).rstrip())
            lines += [" " * indent + part for part in wrapped[1:]]
        else:
            lines.append(head.rstrip())
            lines += textwrap.wrap(detail, width - 4, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def causes_text(rows, width=None):
    """Per host: the summary line, then each root cause whole with the count and names of what follows."""
    width = width or shutil.get_terminal_size((160, 20)).columns
    lines = []
    for host in hosts_of(rows):
        mine = [row for row in rows if row["host"] == host]
        lines.append(host_summary(host, mine))
        for root, folded in causes(mine):
            lines.append(f"  {root['result']}  {root['check']}")
            lines += textwrap.wrap(
                one_line(root["detail"]),
                max(width - 6, 40),
                initial_indent="      ",
                subsequent_indent="      ",
                break_on_hyphens=False,
            )
            if folded:
                names = ", ".join(row["check"] for row in folded[:6])
                if len(folded) > 6:
                    names += ", " + _("and {count} more (the table below has them all)").format(
                        count=len(folded) - 6
                    )
                lines += textwrap.wrap(
                    ngettext(
                        "{count} more check follows from it: {names}",
                        "{count} more checks follow from it: {names}",
                        len(folded),
                    ).format(count=len(folded), names=names),
                    max(width - 6, 40),
                    initial_indent="      ",
                    subsequent_indent="        ",
                    break_on_hyphens=False,
                )
    return "\n".join(lines)


def terminal_text(rows, page, junit):
    """What make verify prints: the root causes first, then the whole table, then where the files are."""
    return "\n".join(
        [
            causes_text(rows),
            "",
            table(rows),
            "",
            _("Summary: {counts}").format(counts=summarize(rows)),
            _("JUnit XML: {path}").format(path=junit or _("(not written)")),
            f"Report: {page}",  # the integration tests find the page by this line: never translated
        ]
    )


# --- checks.json ------------------------------------------------------------------------------------------


def checks_document(rows, images, report_dir):
    """checks.json: the rows with the root cause each one is folded under (README.md has the schema)."""
    cause_of = {}
    root_ids = []
    for host in hosts_of(rows):
        for root, folded in causes([row for row in rows if row["host"] == host]):
            root_ids.append(id(root))
            for row in folded:
                cause_of[id(row)] = root.get("id")
    checks = []
    for row in rows:
        checks.append(
            {
                "check": row["check"],
                "id": row.get("id"),
                "host": row["host"],
                "result": row["result"],
                "detail": str(row["detail"]),
                "depends_on": list(row.get("depends_on") or []),
                "root_cause": id(row) in root_ids,
                "caused_by": cause_of.get(id(row)),
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "hosts": {
            host: {
                "passed": not any(r["result"] in BAD for r in rows if r["host"] == host),
                "summary": summarize([r for r in rows if r["host"] == host]),
            }
            for host in hosts_of(rows)
        },
        "checks": checks,
        "images": [
            {
                "host": image["host"],
                "name": image["name"],
                "path": os.path.relpath(image["path"], report_dir),
                "prompt": image.get("prompt", ""),
                "infotext": image.get("infotext", ""),
            }
            for image in images
        ],
    }


def write_checks_json(rows, images, report_dir):
    path = os.path.join(report_dir, "checks.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(checks_document(rows, images, report_dir), handle, indent=1, ensure_ascii=False)
    os.replace(tmp, path)
    return path


# --- junit.xml --------------------------------------------------------------------------------------------

# A row's result as JUnit says it: a failure, an error, skipped (with the reason), or a pass.
JUNIT_KIND = {"FAIL": "failure", "ABSENT": "failure", "ERROR": "error", "PENDING": "skipped",
              "NOT PROVISIONED": "skipped", "SKIP": "skipped"}  # fmt: skip


def junit_document(rows, timestamp=""):
    """<testsuites> with one <testsuite> per host, in the table's order: each row one <testcase> named by its
    check, classname sdenv.verify.<host>, a failing row's detail as the failure's message and text."""
    suites = ET.Element("testsuites", name="sdenv make verify")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    seconds_all = 0.0
    for host in hosts_of(rows):
        mine = [row for row in rows if row["host"] == host]
        kinds = [JUNIT_KIND.get(row["result"]) for row in mine]
        counts = {
            "tests": len(mine),
            "failures": kinds.count("failure"),
            "errors": kinds.count("error"),
            "skipped": kinds.count("skipped"),
        }
        seconds = sum(float(row.get("seconds") or 0.0) for row in mine)
        suite = ET.SubElement(
            suites, "testsuite", name=host, hostname=host, timestamp=timestamp, time=f"{seconds:.3f}",
            **{key: str(value) for key, value in counts.items()},
        )  # fmt: skip
        for row, kind in zip(mine, kinds, strict=True):
            case = ET.SubElement(suite, "testcase", classname=f"sdenv.verify.{host}", name=row["check"],
                                 time=f"{float(row.get('seconds') or 0.0):.3f}")  # fmt: skip
            detail = str(row["detail"])
            if kind == "skipped":
                ET.SubElement(case, "skipped", message=f"{row['result']}: {one_line(detail)}")
            elif kind:
                element = ET.SubElement(case, kind, message=one_line(detail), type=row["result"])
                element.text = detail
            elif detail:
                ET.SubElement(case, "system-out").text = detail
        totals = {key: totals[key] + counts[key] for key in totals}
        seconds_all += seconds
    for key, value in totals.items():
        suites.set(key, str(value))
    suites.set("time", f"{seconds_all:.3f}")
    return suites


def write_junit(rows, path, timestamp=""):
    tree = ET.ElementTree(junit_document(rows, timestamp))
    ET.indent(tree)
    tmp = path + ".tmp"
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
    return path


# --- The page ---------------------------------------------------------------------------------------------

# Nothing runs off the page: long words and paths break anywhere, <pre> keeps its lines but wraps them, the
# table is fixed-width with its detail column taking the rest, images scale down to their column.
STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:12px 20px;max-width:1240px;line-height:1.35;
 overflow-wrap:anywhere}
h1{font-size:1.25em;margin:0 0 8px}h2{font-size:1.1em;margin:14px 0 6px}h3{font-size:1em;margin:10px 0 4px}
pre,code{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;font-size:.9em}
.summary{font-size:1.1em;font-weight:600;padding:8px 12px;border-radius:6px;margin:4px 0}
.summary.bad{background:#fbe3e3;border-left:6px solid #c62828}
.summary.good{background:#e6f4e6;border-left:6px solid #2e7d32}
.summary.open{background:#f4f0dc;border-left:6px solid #a07d00}
.cause{border:1px solid #e0b4b4;border-radius:6px;padding:6px 10px;margin:6px 0;background:#fff8f8}
.cause .result{font-weight:700;color:#c62828;margin-right:8px}
.cause details{margin-top:4px}.cause ul{margin:4px 0;padding-left:20px}
.images{display:flex;flex-wrap:wrap;gap:10px}
.image{display:flex;gap:10px;margin:0;flex:1 1 560px;max-width:100%;border:1px solid #ccc;border-radius:6px;padding:8px}
.image img{width:256px;max-width:45%;height:auto;align-self:flex-start;border:1px solid #ccc}
.image .infotext{flex:1;min-width:0}
table{border-collapse:collapse;width:100%;table-layout:fixed}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
details.all{margin-top:12px}
.overview{margin:4px 0 10px;padding-left:20px}.overview .bad a{color:#c62828}.overview .good a{color:#2e7d32}.overview .open a{color:#7a5f00}
.host+.host{border-top:2px solid #999;margin-top:16px}
col.check{width:30%}col.host{width:12%}col.result{width:11%}
.PASS{background:#e6f4e6}.FAIL,.ERROR,.ABSENT{background:#fbe3e3}.NOT-PROVISIONED,.SKIP,.PENDING{background:#f4f0dc}
"""


def html_page(rows, images, title, report_dir):
    """A self-contained page (images are files beside it), one section per host."""
    esc = html.escape
    lang = "ja" if _("Generated images") != "Generated images" else "en"
    body = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if len(hosts_of(rows)) > 1:
        # Several hosts: each one's summary line first, linked to its section, so a failing host further
        # down is seen on the first screen too.
        body.append('<ul class="overview">')
        for number, host in enumerate(hosts_of(rows)):
            mine = [row for row in rows if row["host"] == host]
            body.append(
                f'<li class="{verdict(mine)}"><a href="#host-{number}">{esc(host_summary(host, mine))}</a></li>'
            )
        body.append("</ul>")
    for number, host in enumerate(hosts_of(rows) or [""]):
        mine = [row for row in rows if row["host"] == host]
        shown = [image for image in images if image["host"] == host]
        body += host_section(number, host, mine, shown, report_dir)
    body.append("</body></html>\n")
    return "\n".join(body)


def verdict(rows):
    """The summary's colour: bad (something fails), good (all pass) or open (nothing fails, not all pass)."""
    if any(row["result"] in BAD for row in rows):
        return "bad"
    return "good" if all(row["result"] == "PASS" for row in rows) else "open"


def host_section(number, host, rows, images, report_dir):
    esc = html.escape
    out = [
        f'<section class="host" id="host-{number}">',
        f'<p class="summary {verdict(rows)}" id="summary-{number}">{esc(host_summary(host, rows))}</p>',
    ]
    found = causes(rows)
    if found:
        out.append(f'<section class="failures" id="failures-{number}">')
        out.append(f"<h2>{esc(_('What failed, by root cause'))}</h2>")
        for root, folded in found:
            out.append('<div class="cause">')
            out.append(
                f'<div><span class="result">{esc(root["result"])}</span><strong>{esc(root["check"])}</strong></div>'
            )
            out.append(f"<pre>{esc(str(root['detail']))}</pre>")
            if folded:
                out.append(
                    "<details><summary>"
                    + esc(
                        ngettext(
                            "{count} more check fails because of it",
                            "{count} more checks fail because of it",
                            len(folded),
                        ).format(count=len(folded))
                    )
                    + "</summary><ul>"
                )
                out += [
                    f"<li><strong>{esc(row['check'])}</strong> ({esc(row['result'])}): "
                    f"<code>{esc(one_line(row['detail']))}</code></li>"
                    for row in folded
                ]
                out.append("</ul></details>")
            out.append("</div>")
        out.append("</section>")
    if images:
        out.append(f'<section id="images-{number}"><h2>{esc(_("Generated images"))}</h2><div class="images">')
        for image in images:
            src = os.path.relpath(image["path"], report_dir)
            infotext = image.get("infotext") or image.get("prompt", "")
            out.append(
                f'<figure class="image"><img src="{esc(src)}" alt="{esc(image["name"])}">'
                f'<figcaption class="infotext"><strong>{esc(image["name"])}</strong>'
                f"<pre>{esc(infotext)}</pre></figcaption></figure>"
            )
        out.append("</div></section>")
    out.append(
        f'<details class="all" id="table-{number}"><summary>'
        + esc(_("All {count} checks of {host}").format(count=len(rows), host=host))
        + "</summary>"
    )
    out.append(
        '<table><colgroup><col class="check"><col class="host"><col class="result"><col></colgroup>'
        f"<tr><th>{esc(_('check'))}</th><th>{esc(_('host'))}</th><th>{esc(_('result'))}</th>"
        f"<th>{esc(_('detail'))}</th></tr>"
    )
    for row in rows:
        css = row["result"].replace(" ", "-")
        out.append(
            f'<tr class="{esc(css)}"><td>{esc(row["check"])}</td><td>{esc(row["host"])}</td>'
            f"<td>{esc(row['result'])}</td><td><pre>{esc(str(row['detail']))}</pre></td></tr>"
        )
    out.append("</table></details></section>")
    return out


def page_title(when):
    return _("sdenv make verify, {time}").format(time=when)


def write_html(rows, images, title, report_dir):
    path = os.path.join(report_dir, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(html_page(rows, images, title, report_dir))
    os.replace(tmp, path)
    return path
