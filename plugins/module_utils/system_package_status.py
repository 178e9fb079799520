"""Which Debian/Ubuntu packages are installed, from dpkg's own database (no python3-apt needed).

Used to install only what is missing (a second provision runs no apt at all) and to record which
packages the toolkit newly installed, as opposed to ones that were there before it. A package another
dpkg/apt run is installing at that moment (unpacked, half-configured, triggers pending: any state but
installed or not installed) is waited for, not taken as missing: else the toolkit would install it too and
record it as its own, and remove-dummy's record would claim a package the host already had.
"""

import time

# dpkg's current-status letters (the second one of Status-Abbrev) of a package that is not there at all:
# not-installed, config-files. "i" is installed; every other one (H, U, F, W, t) is a run in progress.
NOT_INSTALLED = ("n", "c")

# ${db:Status-Abbrev} is three letters: desired action, current status, error flag; "ii " is a
# package that is installed and healthy. "rc " (removed, configuration kept) is not installed.
DPKG_FORMAT = "${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"


def dpkg_query_argv(names):
    return ["dpkg-query", "--show", f"--showformat={DPKG_FORMAT}", *names]


def parse_dpkg_query(text):
    """`dpkg-query --show --showformat=DPKG_FORMAT NAMES` -> {package: version} of installed ones.

    Packages dpkg never heard of are reported on stderr only (exit 1), so they are simply absent here.
    Multi-arch packages print as `name:arch` when asked that way; the name before the colon is kept.
    """
    return parse_dpkg_states(text)[0]


def parse_dpkg_states(text):
    """-> (installed {package: version}, in_progress {package: status letters}) from the same output."""
    installed, in_progress = {}, {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        name, status, version = fields
        name, status = name.split(":")[0], status.strip()
        if status == "ii":
            installed[name] = version
        elif len(status) >= 2 and status[1] not in NOT_INSTALLED:
            in_progress[name] = status
    return installed, in_progress


class PackagesBusy(OSError):
    """Packages another dpkg/apt run left half-done for longer than we wait; the message is one sentence."""


def package_status(run, names, wait_seconds=0, poll_seconds=2, sleep=time.sleep):
    """-> (installed {name: version} for the wanted names, missing [names] in the order given).

    A wanted package in a state other than installed or not installed (another dpkg/apt run is installing
    it) is waited for, polling every `poll_seconds` up to `wait_seconds`, then PackagesBusy.
    """
    waited = 0
    while True:
        rc, out, err = run(dpkg_query_argv(names))
        # Exit 1 means "some names are not known to dpkg": they are missing, which is the answer sought.
        if rc not in (0, 1):
            raise OSError(f"dpkg-query failed (exit {rc}): {(err or out).strip()}")
        installed, in_progress = parse_dpkg_states(out)
        busy = {name: in_progress[name] for name in names if name in in_progress}
        if not busy:
            break
        if waited >= wait_seconds:
            listed = ", ".join(f"{name} ({status})" for name, status in busy.items())
            raise PackagesBusy(
                f"The packages {listed} are being installed by another dpkg/apt run and were not done after"
                f" {waited} s: let that run finish (if none is running, repair them with"
                " `dpkg --configure -a` as root), then run again"
            )
        sleep(poll_seconds)
        waited += poll_seconds
    missing = [name for name in names if name not in installed]
    return {name: installed[name] for name in names if name in installed}, missing
