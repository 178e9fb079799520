"""Which Debian/Ubuntu packages are installed, from dpkg's own database (no python3-apt needed).

Used to install only what is missing (a second provision runs no apt at all) and to record which
packages the toolkit newly installed, as opposed to ones that were there before it.
"""

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
    installed = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        name, status, version = fields
        if status.strip() == "ii":
            installed[name.split(":")[0]] = version
    return installed


def package_status(run, names):
    """-> (installed {name: version} for the wanted names, missing [names] in the order given)."""
    rc, out, err = run(dpkg_query_argv(names))
    # Exit 1 means "some names are not known to dpkg": they are missing, which is the answer sought.
    if rc not in (0, 1):
        raise OSError(f"dpkg-query failed (exit {rc}): {(err or out).strip()}")
    installed = parse_dpkg_query(out)
    missing = [name for name in names if name not in installed]
    return {name: installed[name] for name in names if name in installed}, missing
