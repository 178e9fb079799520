"""Issue 19 item 5: a model's token goes only to its own host, local files only from the bundle directories,
and a rejected download only where the dummy cannot reach it. Pure logic and local files; the same rules
over real sockets (two loopback host names) are in tests/integration/test_models_http.py."""

import model_download as md
import pytest
from token_hosts import DEFAULT_TOKEN_HOSTS, TokenHostError, parse_entry, token_allowed

CIVITAI = "https://civitai.com/api/download/models/177164"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (CIVITAI, True),
        ("https://CIVITAI.com:443/api/download/models/1", True),
        # A mirror, plain http, another port, and the tricks that look like civitai.com.
        ("https://mirror.example/beautifulRealistic_v7.safetensors", False),
        ("http://civitai.com/api/download/models/177164", False),
        ("https://civitai.com:8443/api/download/models/177164", False),
        ("https://civitai.com.evil.example/api/download/models/177164", False),
        ("https://evil-civitai.com/api/download/models/177164", False),
        ("https://www.civitai.com/api/download/models/177164", False),
        ("https://civitai.com@evil.example/api/download/models/177164", False),
        ("https://evil.example/?u=https://civitai.com/", False),
        ("file:///var/lib/sdenv/model-bundle/m.safetensors", False),
        ("/var/lib/sdenv/model-bundle", False),
        ("not a url", False),
    ],
)
def test_the_default_allow_list_is_civitais_download_host_exactly(url, allowed):
    assert token_allowed(url, DEFAULT_TOKEN_HOSTS) is allowed


def test_http_only_to_a_loopback_host_the_list_names_with_its_port():
    entries = ["http://127.0.0.1:8080"]
    assert token_allowed("http://127.0.0.1:8080/api/download/1", entries)
    assert not token_allowed("http://localhost:8080/api/download/1", entries)
    assert not token_allowed("http://127.0.0.1:8081/api/download/1", entries)
    assert not token_allowed("https://127.0.0.1:8080/api/download/1", entries)
    # A bare name means https: it never lets a token go over plain http, even to that host.
    assert not token_allowed("http://civitai.com/x", ["civitai.com", "http://civitai.com"])
    assert not token_allowed(CIVITAI, [])


@pytest.mark.parametrize(
    ("entry", "origin"),
    [
        ("civitai.com", ("https", "civitai.com", 443)),
        ("https://civitai.com", ("https", "civitai.com", 443)),
        ("https://dl.example:8443/", ("https", "dl.example", 8443)),
        ("http://localhost:5000", ("http", "localhost", 5000)),
        ("http://[::1]:5000", ("http", "::1", 5000)),
    ],
)
def test_allow_list_entries(entry, origin):
    assert parse_entry(entry) == origin


@pytest.mark.parametrize(
    "entry",
    ["http://civitai.com", "http://10.0.0.2", "https://civitai.com/api", "https://u:p@civitai.com", "*.civitai.com",
     "civitai.com ", "", "ftp://civitai.com", "https://civitai.com?x=1", 7],
)  # fmt: skip
def test_entries_that_are_not_origins_are_refused(entry):
    with pytest.raises(TokenHostError, match=r"a host name such as civitai\.com"):
        parse_entry(entry)


def test_installer_withholds_the_token_from_a_host_not_allowed(tmp_path):
    spec = md.Spec(dest=str(tmp_path / "m.safetensors"), urls=[CIVITAI], sha256="0" * 64, token="s3cret",
                   token_env="CIVITAI_TOKEN", stat_cache=str(tmp_path / "state" / "c.json"))  # fmt: skip
    installer = md.Installer(spec)
    assert installer._token_for(CIVITAI) == "s3cret"
    assert installer._token_for("https://mirror.example/m.safetensors") is None
    assert installer._token_for("http://civitai.com/api/download/models/177164") is None
    advice = installer._token_advice("https://mirror.example/m.safetensors")
    assert advice == (
        "the token in CIVITAI_TOKEN is sent only to civitai.com (the hosts sdenv_models_token_hosts allows "
        "for it), not to https://mirror.example"
    )
    assert "s3cret" not in advice
