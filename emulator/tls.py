"""A throwaway certificate authority and server certificate, made at start.

gcapi insists on https (docs/gc-api.md §5) and verifies certificates unless told otherwise, so the emulator mints a CA and a
leaf certificate naming ``127.0.0.1``, ``::1`` and ``localhost`` (an IP SAN: a client that connects to 127.0.0.1 checks
the address, not a name), plus any public host names it is reached by (``--public-host``: in docker compose the other
containers call it ``emulator``). Clients trust it through the printed CA file (``SSL_CERT_FILE`` or ``verify=``).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject_alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_tls_files(directory: Path, extra_hosts: Sequence[str] = (), *, keep_ca: bool = False) -> TlsFiles:
    """A CA and a server certificate for ``extra_hosts`` and loopback. With ``keep_ca`` an existing CA in
    ``directory`` is reused (clients that trust it keep working across restarts); the server certificate is always
    issued afresh, so a changed host name is covered."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key_file = directory / "ca-key.pem"
    if keep_ca and ca_key_file.is_file() and (directory / "ca.pem").is_file():
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    else:
        ca_key, ca_cert = _new_ca()
        ca_key_file.write_bytes(
            ca_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ca_key_file.chmod(0o600)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return _issue_server_files(directory, ca_key, ca_cert, extra_hosts)


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.now(UTC)
    # A kept CA lives as long as the data dir is used; the server certificate is reissued at every start.
    validity = (now - timedelta(minutes=5), now + timedelta(days=3650))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gcbulk emulator CA"))
        .issuer_name(_name("gcbulk emulator CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _issue_server_files(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, extra_hosts: Sequence[str]
) -> TlsFiles:
    loopback = ["localhost", "127.0.0.1", "::1"]
    names = [_subject_alternative_name(host) for host in dict.fromkeys([*loopback, *extra_hosts])]
    now = datetime.now(UTC)
    validity = (now - timedelta(minutes=5), now + timedelta(days=30))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(names),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.key_file.chmod(0o600)
    return files
