"""Transport security: HTTPS with a configured certificate (real uvicorn), body size limits."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hubkit import Hub, copy_hub

from healthspace.client.http import CA_BUNDLE_ENV, HubUnavailable
from healthspace.client.sdk import HubClient
from healthspace.core.errors import InvalidInput
from healthspace.hub.bootstrap import init_hub
from healthspace.hub.serve import check_tls
from healthspace.hub.settings import HubSettings
from healthspace.launch import free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as a hub operator would configure them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "healthspace test hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "hub.crt", folder / "hub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    db = f"sqlite:///{folder / 'hub.db'}"
    token = init_hub(db)
    cert, key = self_signed(folder)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthspace", "hub", "serve", "--db", db, "--port", str(port),
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=str(cert), timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"hub did not start: {log!r}")
            time.sleep(0.2)
        yield url, token, cert
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_https_hub_with_the_ca_bundle(tls_hub, monkeypatch):
    url, token, cert = tls_hub
    monkeypatch.setenv(CA_BUNDLE_ENV, str(cert))
    with HubClient(url, token) as client:
        assert client.me().role.value == "operator"


def test_https_hub_is_not_trusted_without_the_bundle(tls_hub, monkeypatch):
    url, token, _ = tls_hub
    monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
    with HubClient(url, token) as client, pytest.raises(HubUnavailable) as info:
        client.me()
    assert "certificate" in str(info.value).lower()


def test_plain_http_gets_no_answer_from_a_tls_hub(tls_hub):
    url, _, _ = tls_hub
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=2)


def test_tls_options_are_checked(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    with pytest.raises(InvalidInput) as info:
        check_tls(str(cert), None)
    assert info.value.field == "ssl_keyfile"
    with pytest.raises(InvalidInput) as info:
        check_tls(str(cert), str(tmp_path / "missing.key"))
    assert info.value.field == "ssl_keyfile"
    monkeypatch.setenv(CA_BUNDLE_ENV, str(tmp_path / "nope.pem"))
    with pytest.raises(InvalidInput) as info:
        HubClient("https://127.0.0.1:1", "t")
    assert info.value.field == CA_BUNDLE_ENV


def test_oversized_bodies_get_413_and_change_nothing(hub_template: Hub, tmp_path: Path):
    hub = copy_hub(hub_template, tmp_path, HubSettings(max_body_bytes=10_000))
    try:
        before = hub.ok("GET", "/orgs", hub.operator)
        big = {"name": "x", "kind": "hospital", "display_name": "y" * 20_000}
        response = hub.call("POST", "/orgs", hub.operator, json=big)
        assert response.status_code == 413
        assert response.json()["detail"]["field"] == "body"
        assert "10,000" in response.json()["detail"]["message"]

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(30):
                yield b" " * 1000

        headers = {**hub.operator, "Content-Type": "application/json"}
        response = hub.call("POST", "/orgs", headers, content=chunks())
        assert response.status_code == 413
        small = hub.call("POST", "/orgs", hub.operator, json={"name": "ok", "kind": "hospital"})
        assert small.status_code in (200, 201)
        after = hub.ok("GET", "/orgs", hub.operator)
        assert len(after) == len(before) + 1
    finally:
        hub.close()
