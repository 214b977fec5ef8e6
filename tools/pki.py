"""Certificates for TLS in tests: a CA, a server certificate for 127.0.0.1 (or another address
of the test's own) signed by it, a client certificate, and a second CA that neither side trusts.

TLS engines (``dockerd --tlsverify``) and the private registry are served with these; each
test's PKI is made fresh in its own directory and lives one day, so nothing is shared with the
machine or kept between runs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Where :func:`make_pki` wrote each PEM file; keys are readable by their owner only."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # a CA that neither side trusts


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _san(name: str) -> x509.GeneralName:
    """An address, or a host name, as a subject alternative name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
                 usage: x509.ObjectIdentifier | None = None, server_ips: Sequence[str] = ("127.0.0.1",)
                 ) -> x509.Certificate:
    """Self-signed CA when ``issuer`` is None; otherwise a leaf for ``usage`` signed by it (a
    server's for the addresses ``server_ips``)."""
    now = dt.datetime.now(dt.timezone.utc)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(name) for name in server_ips]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, server_ip: str | Sequence[str] = "127.0.0.1") -> Pki:
    """A fresh CA, server (for ``server_ip``: one address, or several addresses and host names)
    and client certificates, and a stranger CA, written to ``d``."""
    ips = (server_ip,) if isinstance(server_ip, str) else tuple(server_ip)
    ca_key, server_key, client_key, stranger_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca = ("test-ca", ca_key)
    return Pki(
        ca=_write_cert(_certificate("test-ca", ca_key, None), d / "ca.pem"),
        server_cert=_write_cert(_certificate("engine", server_key, ca, ExtendedKeyUsageOID.SERVER_AUTH, ips),
                                 d / "server.pem"),
        server_key=_write_key(server_key, d / "server-key.pem"),
        client_cert=_write_cert(_certificate("worker", client_key, ca, ExtendedKeyUsageOID.CLIENT_AUTH), d / "cert.pem"),
        client_key=_write_key(client_key, d / "key.pem"),
        stranger_ca=_write_cert(_certificate("stranger-ca", stranger_key, None), d / "stranger-ca.pem"),
    )
