"""A package index client just big enough for pinned files: list a project's files, fetch one by its sha256.

It reads the PEP 503 "simple" HTML every index serves (PyPI, a devpi, a static directory over HTTP): one
`<a href="URL#sha256=HEX" data-requires-python="...">FILENAME</a>` per file. Nothing is resolved here: the
lock already names every file's sha256, so choosing is picking a listed file whose hash the lock pins, and a
download is kept only when its bytes hash to that value (temp file, fsync, rename).
"""

import hashlib
import html.parser
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import urllib.request

try:
    from ansible.module_utils.webui_files import sha256_file
except ImportError:  # unit tests and the controller's tools import module_utils directly
    from webui_files import sha256_file

PYPI_SIMPLE = "https://pypi.org/simple"


class PackageIndexError(Exception):
    """An index that cannot give a pinned file, named in one sentence."""


def normalize(name):
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.found, self._href, self._attrs, self._text = [], None, {}, []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._attrs = dict(attrs)
            self._href = self._attrs.get("href")
            self._text = []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.found.append((self._href, "".join(self._text).strip(), self._attrs))
            self._href = None


def parse_simple_page(text, page_url):
    """[{filename, url, sha256, requires_python}] from a PEP 503 project page."""
    parser = _Anchors()
    parser.feed(text)
    files = []
    for href, label, attrs in parser.found:
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        filename = label or urllib.parse.unquote(url.rsplit("/", 1)[-1])
        digest = ""
        for part in fragment.split("&"):
            if part.startswith("sha256="):
                digest = part[len("sha256=") :].lower()
        files.append({
            "filename": filename,
            "url": url,
            "sha256": digest,
            "requires_python": attrs.get("data-requires-python") or "",
        })  # fmt: skip
    return files


def project_url(index_url, name):
    return f"{(index_url or PYPI_SIMPLE).rstrip('/')}/{normalize(name)}/"


def list_files(index_url, name, timeout=60):
    url = project_url(index_url, name)
    request = urllib.request.Request(url, headers={"Accept": "text/html", "User-Agent": "sdenv"})  # noqa: S310 - an index URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - an index URL
            text = response.read().decode("utf-8", errors="replace")
            final = response.geturl()
    except OSError as exc:
        raise PackageIndexError(
            f"The package index page {url} could not be read ({exc}): check the network or the index URL."
        ) from exc
    return parse_simple_page(text, final)


def fetch(url, dest, sha256="", progress=None, timeout=60, check=None):
    """Download url to dest (temp file, fsync, rename), keeping it only if its sha256 is the pinned one (when
    given) and check(temp path) raises nothing. Returns bytes written (0 when dest was already there with
    that hash). progress(done, total) is called now and then."""
    if sha256 and os.path.isfile(dest) and sha256_file(dest) == sha256:
        return 0
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-dl-", dir=directory)
    digest, done = hashlib.sha256(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "sdenv"})  # noqa: S310 - a pinned URL
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0)
            last = 0.0
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                handle.write(block)
                done += len(block)
                if progress and time.monotonic() - last > 1:
                    progress(done, total)
                    last = time.monotonic()
            handle.flush()
            os.fsync(handle.fileno())
        if sha256 and digest.hexdigest() != sha256:
            raise PackageIndexError(
                f"{url} gave a file with sha256 {digest.hexdigest()}, the lock pins {sha256}: nothing was kept."
            )
        if check:
            check(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as exc:
        raise PackageIndexError(
            f"{url} could not be downloaded ({exc}): check the network or use a bundle."
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return done


def copy_verified(src, dest, sha256):
    """Copy a local file to dest (temp, fsync, rename) if its sha256 is the pinned one."""
    actual = sha256_file(src)
    if actual != sha256:
        raise PackageIndexError(
            f"{src} has sha256 {actual}, the lock pins {sha256}: replace it with the pinned file."
        )
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-cp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
