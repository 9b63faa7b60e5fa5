"""What the real servers actually do: the facts the downloader's design rests on.

These pin third-party behaviour (Caddy, moto's S3, proxy.py) and the test layers in front
of them, so a change in a server or a wrong assumption shows up here first.
"""

from __future__ import annotations

import gzip
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest
import trustme

from .servers import Bucket, Caddy, ForwardProxy, unique


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain httpx client that asks for stored bytes (no compression)."""
    with httpx.Client(timeout=10, headers={"Accept-Encoding": "identity"}) as client:
        yield client


def test_caddy_416_has_a_body_and_the_length(caddy: Caddy, folder: str, http: httpx.Client) -> None:
    """Caddy answers a Range past the end with 416, `bytes */N` and a non-empty text body."""
    url, _ = caddy.put(f"{folder}/a.bin", b"x" * 1000)
    response = http.get(url, headers={"Range": "bytes=1000-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1000"
    assert response.content == b"invalid range: failed to overlap\n"


def test_s3_416_has_an_xml_body_and_no_content_range(bucket: Bucket, http: httpx.Client) -> None:
    """S3 answers a Range past the end with 416, an InvalidRange XML body, no Content-Range."""
    url = bucket.put(unique("k-"), b"x" * 1000)
    response = http.get(url, headers={"Range": "bytes=1000-"})
    assert response.status_code == 416
    assert "content-range" not in response.headers
    assert b"<Code>InvalidRange</Code>" in response.content
    assert b"<ActualObjectSize>1000</ActualObjectSize>" in response.content


def test_caddy_validators_and_if_range(caddy: Caddy, folder: str, http: httpx.Client) -> None:
    """Caddy sends ETag and Last-Modified; a matching If-Range gets 206, a stale one all of it."""
    url, _ = caddy.put(f"{folder}/a.bin", bytes(range(256)) * 4)
    first = http.get(url)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    for validator in (etag, modified):
        resumed = http.get(url, headers={"Range": "bytes=1000-", "If-Range": validator})
        assert resumed.status_code == 206
        assert resumed.headers["content-range"] == "bytes 1000-1023/1024"
    caddy.put(f"{folder}/a.bin", bytes(reversed(range(256))) * 4)  # same length, new bytes
    for validator in (etag, modified):
        stale = http.get(url, headers={"Range": "bytes=1000-", "If-Range": validator})
        assert stale.status_code == 200
        assert stale.content == bytes(reversed(range(256))) * 4
    assert http.get(url).headers["etag"] != etag


def test_s3_ignores_if_range_but_honours_if_match(bucket: Bucket, http: httpx.Client) -> None:
    """moto's S3 answers 206 to a stale If-Range (it ignores it); a stale If-Match gets 412."""
    url = bucket.put(unique("k-"), b"y" * 1000)
    etag = http.get(url).headers["etag"]
    stale = {"Range": "bytes=10-", "If-Range": '"0123"'}
    assert http.get(url, headers=stale).status_code == 206
    assert http.get(url, headers={"Range": "bytes=10-", "If-Match": etag}).status_code == 206
    assert http.get(url, headers={"Range": "bytes=10-", "If-Match": '"0123"'}).status_code == 412


def test_s3_sends_gzip_to_an_identity_request(bucket: Bucket, http: httpx.Client) -> None:
    """An object stored gzip-encoded comes back gzip, with the stored length, to identity."""
    body = gzip.compress(b"line of text\n" * 10_000)
    url = bucket.put(unique("k-"), body, ContentEncoding="gzip")
    with http.stream("GET", url) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["content-length"] == str(len(body))
    assert raw == body
    with http.stream("GET", url, headers={"Range": "bytes=100-"}) as ranged:
        assert ranged.status_code == 206  # a slice of the gzip stream, not of the text
        assert ranged.headers["content-encoding"] == "gzip"
        assert ranged.headers["content-range"] == f"bytes 100-{len(body) - 1}/{len(body)}"
        assert b"".join(ranged.iter_raw()) == body[100:]


@pytest.mark.parametrize("key", ["a b/ü+&#%[]~.bin", "dir/x+y&z=#1%25", "~tilde [1].glb"])
def test_s3_awkward_keys_round_trip(bucket: Bucket, http: httpx.Client, key: str) -> None:
    """Keys with spaces, unicode and URL syntax are presigned and served byte-exact."""
    body = key.encode() * 100
    response = http.get(bucket.put(f"{unique()}/{key}", body))
    assert response.status_code == 200
    assert response.content == body


def test_front_layer_expires_with_s3s_xml(bucket: Bucket, http: httpx.Client) -> None:
    """Before the deadline the layer passes S3's answer through; after it, S3's expiry 403."""
    url = bucket.put(unique("k-"), b"z" * 100)
    assert http.get(url).content == b"z" * 100
    bucket.front.expire_after(0)
    expired = http.get(url)
    assert expired.status_code == 403
    assert expired.headers["content-type"] == "application/xml"
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.content
    assert [e.status for e in bucket.front.exchanges(url)] == [200, 403]


def test_front_layer_cuts_a_body_once(bucket: Bucket, http: httpx.Client) -> None:
    """A cut answer declares the full length, stops early, and the next answer is whole."""
    url = bucket.put(unique("k-"), b"q" * 100_000)
    bucket.front.cut(url, after=30_000)
    with http.stream("GET", url) as response:
        got = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                got += chunk
    assert response.headers["content-length"] == "100000"
    assert len(got) == 30_000
    assert http.get(url).content == b"q" * 100_000


def test_caddy_https_offers_http2(caddy: Caddy, ca: trustme.CA) -> None:
    """Caddy's HTTPS site picks h2 when a client offers it (ALPN)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    sock = socket.create_connection(("127.0.0.1", caddy.ports["https"]), timeout=5)
    with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "h2"


def test_proxy_sees_plain_requests_and_connects(
    proxy: ForwardProxy, caddy: Caddy, folder: str, ssl_context: ssl.SSLContext
) -> None:
    """proxy.py logs a proxied plain GET with its headers, and an HTTPS CONNECT's target."""
    http_url, https_url = caddy.put(f"{folder}/p.bin", b"proxied")
    with httpx.Client(proxy=proxy.url, verify=ssl_context, timeout=10) as client:
        assert client.get(http_url, headers={"X-Probe": "1"}).content == b"proxied"
        assert client.get(https_url).content == b"proxied"
    seen = proxy.seen()
    plain = [s for s in seen if s["method"] == "GET"]
    assert [(s["host"], s["port"], s["path"]) for s in plain] == [
        ("127.0.0.1", caddy.ports["http"], f"/{folder}/p.bin")
    ]
    assert plain[0]["headers"]["X-Probe"] == "1"
    connects = [(s["host"], s["port"]) for s in seen if s["method"] == "CONNECT"]
    assert connects == [("127.0.0.1", caddy.ports["https"])]
