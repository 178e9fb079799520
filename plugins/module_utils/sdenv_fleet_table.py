"""The table a fleet run ends with: one row per host, so an operator reads what happened where at a glance.

The stdout callback (plugins/callback/sdenv_stdout.py) feeds a FleetRun with what Ansible tells it (a task
started on a host, a result, an unreachable host) and prints FleetRun.table() under the recap when the run
touched more than one host. Plain Python, no Ansible: tests/unit/test_fleet_table.py drives it with recorded
events.

A host's result is one of:
- ok: it ran every task the run got to;
- failed: a task failed on it; the row names that task and its sentence (the message's first line);
- unreachable: the controller could not reach it over SSH; the row carries SSH's sentence;
- stopped: it did not fail, but the run was cut short (another host failed an all-or-nothing step such as
  the preflight, or more hosts failed than MAX_FAIL allows): see the failed host's row for why.

What the host now has (the WebUI commit, ComfyUI's commit where sdenv_apps chooses it, the sha256 of the
venv lock file the WebUI's venv was built from, the models verified of those enabled) comes from the fact sdenv_host_summary, which make provision's last host
task (provision_fastpath's stamp) reads from the provision record it has open anyway: no round trip of its
own. A host that failed or stopped before that task shows "-" there: what it has is not known.
"""

import unicodedata

from sdenv_i18n import _

FAILED, UNREACHABLE, OK, STOPPED = "failed", "unreachable", "ok", "stopped"
COMMIT_WIDTH = 10  # as git's abbreviations go: unique in any repository this size
DIGEST_WIDTH = 12
SENTENCE_WIDTH = 200  # a longer first line is cut with "...": the full message is printed above the table


class FleetRun:
    """What each host did in one run. Times are the caller's (seconds from any monotonic clock)."""

    def __init__(self):
        self.hosts = {}  # name -> dict: start, end, changed, platform, result, step, sentence
        self.cut_short = (
            False  # Ansible ended the run with hosts left (any_errors_fatal, max_fail_percentage)
        )

    def _host(self, name, now):
        return self.hosts.setdefault(
            name,
            {
                "start": now,
                "end": now,
                "changed": 0,
                "platform": "",
                "result": OK,
                "step": "",
                "sentence": "",
                "summary": {},
            },
        )

    def started(self, name, now):
        self._host(name, now)

    def finished(self, name, now, changed=False, facts=None):
        """A task ended on a host without failing (ok, changed or skipped)."""
        host = self._host(name, now)
        host["end"] = now
        host["changed"] += 1 if changed else 0
        platform = describe_platform(facts or {})
        if platform:
            host["platform"] = platform
        summary = (facts or {}).get("sdenv_host_summary")
        if isinstance(summary, dict):
            host["summary"] = summary

    def failed(self, name, task_name, message, now, unreachable=False):
        host = self._host(name, now)
        host["end"] = now
        if host["result"] in (FAILED, UNREACHABLE):
            return  # the first failure is the one that says why; later ones (rescue, cleanup) follow from it
        host["result"] = UNREACHABLE if unreachable else FAILED
        host["step"] = task_name
        host["sentence"] = first_line(message)

    def rows(self):
        """[(host, platform, result, changed, seconds, webui, comfyui, venv lock, models, step, sentence)], hosts
        in name order; webui, comfyui, venv lock and models are "" when not known (comfyui also where it is not
        chosen)."""
        rows = []
        for name in sorted(self.hosts):
            host = self.hosts[name]
            result = host["result"]
            if result == OK and self.cut_short:
                result = STOPPED
            seconds = max(0.0, host["end"] - host["start"])
            summary = host["summary"]
            rows.append((name, host["platform"] or "?", result, host["changed"], seconds,
                         str(summary.get("webui_commit") or "")[:COMMIT_WIDTH],
                         str(summary.get("comfyui_commit") or "")[:COMMIT_WIDTH],
                         str(summary.get("venv_lock") or "")[:DIGEST_WIDTH], str(summary.get("models") or ""),
                         host["step"], host["sentence"]))  # fmt: skip
        return rows

    def table(self):
        return render(self.rows())


def describe_platform(facts):
    """ "Debian 12 x86_64" / "macOS 14.5 arm64" from setup's facts (with or without the ansible_ prefix)."""
    facts = {key.removeprefix("ansible_"): value for key, value in facts.items()}
    system = facts.get("system")
    if not system:
        return ""
    if system == "Darwin":
        name, version = "macOS", facts.get("distribution_version") or ""
    else:
        name = facts.get("distribution") or system
        version = facts.get("distribution_major_version") or facts.get("distribution_version") or ""
    return " ".join(part for part in (name, str(version), facts.get("architecture") or "") if part)


def first_line(message):
    text = str(message or "").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= SENTENCE_WIDTH else line[: SENTENCE_WIDTH - 3] + "..."


def render(rows):
    """A plain-text table (columns padded with spaces, so it reads the same in a terminal and a CI log)."""
    words = {OK: _("ok"), FAILED: _("failed"), UNREACHABLE: _("unreachable"), STOPPED: _("stopped")}
    header = (_("HOST"), _("PLATFORM"), _("RESULT"), _("CHANGED"), _("TIME"), _("WEBUI"), _("COMFYUI"),
              _("VENV LOCK"), _("MODELS"), _("FAILED STEP: SENTENCE"))  # fmt: skip
    body = [
        (
            host,
            platform,
            words[result],
            str(changed),
            f"{seconds:.0f}s",
            webui or "-",
            comfyui or "-",
            venv_lock or "-",
            models or "-",
            f"{step}: {sentence}" if step else "",
        )
        for host, platform, result, changed, seconds, webui, comfyui, venv_lock, models, step, sentence in rows
    ]
    widths = [max(display_width(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *body]:
        cells = [cell + " " * (width - display_width(cell)) for cell, width in zip(row[:-1], widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def display_width(text):
    """Columns a terminal gives text: a Japanese heading's characters take two each."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)
