"""An HTTP(S) connection that goes through the proxy the environment names, as curl, git and uv do.

http.client alone ignores HTTPS_PROXY / HTTP_PROXY / NO_PROXY, so behind a proxy a model download or a
reachability probe would try to reach the origin directly and fail. The CA bundle for a TLS-intercepting
proxy reaches Python through SSL_CERT_FILE (OpenSSL's default verify paths read it), which the toolkit sets
on every host task (README "Behind a proxy").
"""

import base64
from urllib.parse import unquote, urlsplit


def proxy_for(url, environ):
    """The proxy URL for `url` from environ (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, either case), or None."""

    def get(name):
        return environ.get(name.lower()) or environ.get(name.upper()) or ""

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for entry in get("no_proxy").replace(" ", "").split(","):
        entry = entry.lower().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    proxy = get("https_proxy") if parts.scheme == "https" else get("http_proxy")
    return proxy or None


def connect(url, timeout, environ, context=None):
    """(connection, request target) for `url`: the target is the path for a direct or tunnelled connection,
    the absolute URL for plain http through a proxy (RFC 9112 absolute-form)."""
    import http.client
    import ssl

    parts = urlsplit(url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    proxy = proxy_for(url, environ)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url} is not an http(s) URL")
    context = context or (ssl.create_default_context() if parts.scheme == "https" else None)
    if not proxy:
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=context
            ), target
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), target
    # The proxy itself is spoken to in plain HTTP (http://host:port, what HTTPS_PROXY holds almost always);
    # an https origin is reached through a CONNECT tunnel with TLS to the origin inside it.
    via = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    headers = {}
    if via.username:
        secret = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(secret).decode()
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(via.hostname, via.port or 80, timeout=timeout, context=context)
        conn.set_tunnel(parts.hostname, parts.port or 443, headers=headers)
        return conn, target
    conn = http.client.HTTPConnection(via.hostname, via.port or 80, timeout=timeout)
    conn.sdenv_proxy_headers = headers  # sent with each request (absolute-form through the proxy)
    return conn, url
