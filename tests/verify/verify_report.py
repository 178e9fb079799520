"""The report of one `make verify` run: the table printed at the end and the HTML page beside the JUnit XML.

A row is {"check", "host", "result", "detail"}; result is PASS, FAIL, ERROR, "NOT PROVISIONED" (the lock or
settings define no such thing yet, or the dummy account it belongs to is not there, so there is nothing to
check: said plainly, never shown as a pass) or ABSENT (the dummy account row on a host where it and
everything of it are gone, e.g. after make remove-dummy: verify fails, because nothing is in place) or
PENDING (a model the lock gives neither URL nor pin for: the user fetches it by hand; not a failure).
"""

import html
import os
import shutil
import textwrap

RESULT_ORDER = {"ABSENT": 0, "FAIL": 0, "ERROR": 0, "PENDING": 1, "NOT PROVISIONED": 1, "SKIP": 2, "PASS": 3}


def summarize(rows):
    counts = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return ", ".join(f"{counts[k]} {k.lower()}" for k in sorted(counts, key=lambda k: RESULT_ORDER.get(k, 9)))


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
        detail = " ".join(str(row["detail"]).split())
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


def html_page(rows, images, title, report_dir):
    """A self-contained page: summary, the table, and the generated images (files beside the page)."""
    esc = html.escape
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        ".PASS{background:#e6f4e6}.FAIL,.ERROR,.ABSENT{background:#fbe3e3}.NOT-PROVISIONED,.SKIP,.PENDING{background:#f4f0dc}"
        "figure{display:inline-block;margin:1em}img{max-width:512px;border:1px solid #ccc}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(summarize(rows))}</p>",
        "<table><tr><th>check</th><th>host</th><th>result</th><th>detail</th></tr>",
    ]
    for row in rows:
        css = row["result"].replace(" ", "-")
        body.append(
            f'<tr class="{esc(css)}"><td>{esc(row["check"])}</td><td>{esc(row["host"])}</td>'
            f"<td>{esc(row['result'])}</td><td><pre>{esc(str(row['detail']))}</pre></td></tr>"
        )
    body.append("</table>")
    if images:
        body.append("<h2>Generated images</h2>")
        for image in images:
            src = os.path.relpath(image["path"], report_dir)
            body.append(
                f'<figure><img src="{esc(src)}" alt="{esc(image["name"])}">'
                f"<figcaption>{esc(image['host'])}: {esc(image['name'])}<br><code>{esc(image['prompt'])}</code>"
                "</figcaption></figure>"
            )
    body.append("</body></html>\n")
    return "\n".join(body)


def write_html(rows, images, title, report_dir):
    path = os.path.join(report_dir, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(html_page(rows, images, title, report_dir))
    os.replace(tmp, path)
    return path
