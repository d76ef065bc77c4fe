# TLS for `ssl:` listen entries. notifd builds the server context itself instead of taking
# the one Twisted's `ssl:` endpoint makes: that one accepts ciphers without forward secrecy
# (AES128-SHA), and its certificate cannot be replaced without a restart.
#
# Rules that hold here:
# - An `ssl:` string keeps the meaning it has for Twisted: its syntax (parsed by Twisted)
#   and its options privateKey=, certKey=, extraCertChain=, dhParameters=, interface=,
#   backlog=. Only sslmethod= is refused: the versions are TLS 1.2 and 1.3.
# - certKey= may hold the chain after the certificate (Twisted's own parser drops it).
# - Twisted asks `ServerTLS` for each new connection's TLS state, so a reload replaces
#   `ServerTLS.options` and nothing else: open connections keep the context they began with.
# - On SIGHUP the files are read and the context is built on a thread, never on the
#   reactor; a reload that fails logs one line and leaves the old context in place.
# - Every TLSError message names the file at fault and is one line.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import defer, threads
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.endpoints import _parse as parse_endpoint_string
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    AcceptableCiphers,
    CertificateOptions,
    DiffieHellmanParameters,
    TLSVersion,
)
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from .config import ConfigError

# TLS 1.2 ciphers: ECDHE or DHE key exchange (forward secrecy) with an AEAD cipher; this is
# Mozilla's "intermediate" list. TLS 1.3 suites are configured apart by OpenSSL and are all
# forward-secret. DHE needs dhParameters= on the listen entry.
DEFAULT_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
])


class TLSError(Exception):
    """An `ssl:` entry or one of its files that cannot be used; one line, naming the file."""


def is_tls(description: str) -> bool:
    """Whether a listen entry serves TLS (Twisted's `ssl:` server endpoint)."""
    return description.split(":", 1)[0] == "ssl"


def check_ciphers(ciphers: str | None) -> None:
    """Refuse a `tls.ciphers` value that selects no TLS 1.2 cipher of this OpenSSL."""
    try:
        _acceptable(ciphers)
    except TLSError as e:
        raise ConfigError(f"tls.ciphers: {e}") from None


def _acceptable(ciphers: str | None) -> AcceptableCiphers:
    wanted = ciphers or DEFAULT_CIPHERS
    try:
        acceptable = AcceptableCiphers.fromOpenSSLCipherString(wanted)
        CertificateOptions(acceptableCiphers=acceptable)  # raises ValueError when nothing is left
    except (ValueError, SSL.Error):
        raise TLSError(f"{wanted!r} selects no TLS 1.2 cipher this OpenSSL knows (try `openssl ciphers -v '{wanted}'`)") from None
    return acceptable


@dataclass(frozen=True)
class Entry:
    """One `ssl:` listen entry."""

    description: str
    port: int
    interface: str
    backlog: int
    private_key: str
    certificate: str
    extra_chain: str | None
    dh_parameters: str | None


def parse(description: str) -> Entry:
    """Parse an `ssl:` listen entry as Twisted would; raises TLSError."""
    args, options = parse_endpoint_string(description)
    try:
        return Entry(description, *_fields(*args[1:], **options))
    except TypeError as e:  # a missing port, an unknown option
        raise TLSError(str(e).replace("_fields() ", "")) from None


# The signature of Twisted's `ssl:` server parser, so that the same strings mean the same.
def _fields(port, privateKey="server.pem", certKey=None, sslmethod=None, interface="", backlog=50,
            extraCertChain=None, dhParameters=None) -> tuple:
    if sslmethod is not None:
        raise TLSError("sslmethod= is not supported: notifd serves TLS 1.2 and 1.3; tls.ciphers chooses the ciphers")
    try:
        port, backlog = int(port), int(backlog)
    except ValueError:
        raise TLSError("the port and backlog= must be numbers") from None
    return port, interface, backlog, privateKey, certKey or privateKey, extraCertChain, dhParameters


def load(entry: Entry, ciphers: str | None = None) -> CertificateOptions:
    """Read the entry's files and build its TLS options (blocking); raises TLSError."""
    certificates = _certificates(entry.certificate)
    key = _private_key(entry.private_key)
    if _public_bytes(key.public_key()) != _public_bytes(certificates[0].public_key()):
        raise TLSError(f"the private key {entry.private_key} is not the key of the certificate {entry.certificate}")
    chain = certificates[1:] + (_certificates(entry.extra_chain) if entry.extra_chain else [])
    dh = None
    if entry.dh_parameters:
        _read(entry.dh_parameters)  # OpenSSL's error would not name the file
        dh = DiffieHellmanParameters.fromFile(FilePath(entry.dh_parameters))
    options = CertificateOptions(  # cryptography's objects: pyOpenSSL's own are deprecated
        privateKey=key,
        certificate=certificates[0],
        extraCertChain=chain or None,
        dhParameters=dh,
        acceptableCiphers=_acceptable(ciphers),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()  # built here, so that the first connection reads no file
    except SSL.Error as e:
        raise TLSError(f"{entry.dh_parameters or entry.description}: {_openssl_reason(e)}") from None
    return options


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read {path}: {e.strerror}") from None


def _certificates(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise TLSError(f"{path}: no certificate in PEM format") from None


def _private_key(path: str):
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError):  # TypeError: the key is encrypted
        raise TLSError(f"{path}: not an unencrypted private key in PEM format") from None


def _public_bytes(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _openssl_reason(error: Exception) -> str:
    reasons = [reason for _, _, reason in error.args[0]] if error.args and isinstance(error.args[0], list) else []
    return "; ".join(reasons) or str(error)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The TLS of one `ssl:` listen entry: each new connection gets the current options."""

    log = Logger(namespace="notifd")

    def __init__(self, entry: Entry, ciphers: str | None = None) -> None:
        self.entry = entry
        self.options = load(entry, ciphers)

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        return self.options.serverConnectionForTLS(protocol)

    def reload(self, reactor, ciphers: str | None = None) -> defer.Deferred:
        """Read the files again on a thread and use them for new connections; on failure,
        log one line and keep the old ones. The Deferred fires when done, never fails."""
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), load, self.entry, ciphers)

        def loaded(options: CertificateOptions) -> None:
            self.options = options
            self.log.info("SIGHUP: TLS certificate {certificate} reloaded", certificate=self.entry.certificate)

        def failed(failure) -> None:
            if failure.check(TLSError):
                self.log.error("SIGHUP: TLS certificate not reloaded, still serving the old one: {error}",
                               error=failure.getErrorMessage())
            else:
                self.log.failure("SIGHUP: TLS certificate not reloaded, still serving the old one", failure)

        return d.addCallbacks(loaded, failed)


def server_endpoint(reactor, description: str, ciphers: str | None = None) -> tuple[SSL4ServerEndpoint, ServerTLS]:
    """The endpoint of an `ssl:` listen entry, and its reloadable TLS; raises TLSError."""
    entry = parse(description)
    tls = ServerTLS(entry, ciphers)
    return SSL4ServerEndpoint(reactor, entry.port, tls, entry.backlog, entry.interface), tls
