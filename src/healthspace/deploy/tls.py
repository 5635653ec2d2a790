"""A self-signed certificate for a hub that has no certificate from a CA yet.

Nodes and clients trust it by configuring the certificate itself as their CA bundle; it is its
own CA (basic constraints CA:TRUE, no path below it) so OpenSSL accepts it as a trust anchor.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from healthspace.deploy.files import PRIVATE, PUBLIC, write_file

DEFAULT_NAMES = ("127.0.0.1", "localhost")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - listen addresses, never certificate names


def subject_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names the certificate is valid for: loopback, the listen host, any extra names."""
    names: list[str] = []
    for name in (*DEFAULT_NAMES, host, *extra):
        if name not in WILDCARD_HOSTS and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed(certfile: Path, keyfile: Path, names: list[str], days: int = 825) -> None:
    """Write an ECDSA P-256 key (0600) and a certificate for ``names`` (0644)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthspace hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_file(keyfile, key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()), PRIVATE)
    write_file(certfile, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
