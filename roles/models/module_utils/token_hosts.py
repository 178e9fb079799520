# Where a model's token may go: the one allow-list decision, used by the download (model_download) before it
# adds an Authorization header and by the preflight (sdenv_preflight_rules) to check
# sdenv_models_token_hosts. Stdlib only (runs on the target host, Python >= 3.9).
#
# An allow-list entry is a host name (`civitai.com`: https on port 443), or an origin `https://host[:port]`,
# or `http://host[:port]` for a loopback host only (this machine: a local mirror or a test server), since a
# token sent over plain http to another machine can be read on the way. A URL gets the token only when its
# (scheme, host, port) equals an entry's exactly: no subdomain, suffix or prefix matching, so
# `civitai.com.evil.example`, `evil-civitai.com` and `civitai.com@evil.example` never get it.
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# Civitai's downloads: https://civitai.com/api/download/models/<version>, which answers 307 to presigned
# storage that needs no token (the download never forwards it across a redirect anyway).
DEFAULT_TOKEN_HOSTS = ("civitai.com",)
DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
EXPECTED = (
    "a host name such as civitai.com (https), an origin https://host[:port], or http://host[:port] for a "
    "loopback host (localhost, 127.0.0.1, ::1) only"
)


class TokenHostError(ValueError):
    """An allow-list entry that is not one; the message says what is expected."""


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_host(host):
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_NAME.match(host) is not None


def parse_entry(entry):
    """(scheme, host, port) an allow-list entry names. Raises TokenHostError."""
    if not isinstance(entry, str) or not entry or entry != entry.strip():
        raise TokenHostError(EXPECTED)
    text = entry if "://" in entry else "https://" + entry
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise TokenHostError(EXPECTED) from None
    host = parts.hostname or ""
    if (
        parts.scheme not in DEFAULT_PORTS
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not _valid_host(host)
    ):
        raise TokenHostError(EXPECTED)
    if parts.scheme == "http" and not is_loopback(host):
        raise TokenHostError(
            EXPECTED + f" (a token over http to {host} could be read by anyone on the way: use https)"
        )
    return parts.scheme, host, port or DEFAULT_PORTS[parts.scheme]


def origin_of(url):
    """(scheme, host, port) of an http(s) URL as the download connects to it, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def token_allowed(url, entries):
    """True when `url` may receive the token: its origin is exactly one the allow-list names. Entries that
    are not valid allow nothing (the preflight names them)."""
    origin = origin_of(url)
    if origin is None:
        return False
    scheme, host, _port = origin
    if scheme == "http" and not is_loopback(host):
        return False
    for entry in entries or ():
        try:
            if parse_entry(entry) == origin:
                return True
        except TokenHostError:
            continue
    return False


def show_origin(origin):
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == DEFAULT_PORTS[scheme] else f":{port}")
