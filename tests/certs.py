"""Certificates made in the tests, for localhost and 127.0.0.1."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def make_certificate(directory: Path, name: str = "server", use_rsa: bool = False, ca: tuple | None = None) -> tuple[Path, Path]:
    """Write `<name>.pem` (the certificate) and `<name>.key` in `directory`; returns their paths.

    Self-signed (and a CA itself) unless `ca` = (certificate path, key path) signs it.
    RSA when asked: ciphers without forward secrecy, such as AES128-SHA, need an RSA key.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if use_rsa else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"localhost {name}")])
    if ca is None:
        issuer, signing_key = subject, key
    else:
        issuer = x509.load_pem_x509_certificate(Path(ca[0]).read_bytes()).subject
        signing_key = serialization.load_pem_private_key(Path(ca[1]).read_bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
