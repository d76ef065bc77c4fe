"""TLS against a real notifd: forward-secret ciphers by default and `tls.ciphers`, certificates
reloaded on SIGHUP (also with --workers), the log naming TLS ports, and `notifctl watch`
against a certificate it does not trust."""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl

import pytest

from tests import transcript
from tests.certs import make_certificate
from tests.integration.conftest import TIMEOUT, DaemonProcess, LineClient

pytestmark = pytest.mark.integration

RELOADED = re.compile(r"SIGHUP: TLS certificate \S+ reloaded")


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate (EC) in a directory of its own, usable as trustRoots=."""
    trust = tmp_path / "trust"
    trust.mkdir()
    cert, key = make_certificate(trust)
    return cert, key.rename(tmp_path / key.name)


@pytest.fixture
def rsa_certificate(tmp_path):
    return make_certificate(tmp_path, "rsa", use_rsa=True)


def ssl_listen(cert, key) -> str:
    return f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"


class TLSClient(LineClient):
    def __init__(self, port: int, cafile=None, context: ssl.SSLContext | None = None) -> None:
        if context is None:
            context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.buffer = b""

    def certificate(self) -> bytes:
        return self.sock.getpeercert(binary_form=True)


def tls12_context(ciphers: str, cafile) -> ssl.SSLContext:
    """A client that offers only `ciphers`, over TLS 1.2 (TLS 1.3 suites cannot be restricted so)."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def der(cert_path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_path.read_text())


# --- serving TLS -----------------------------------------------------------------------------------


def test_a_tls_client_completes_the_tutorial_session(daemon, notifctl, certificate, start_notifctl):
    cert, key = certificate
    for type_name, text in transcript.POSTS_BEFORE:
        notifctl("add", type_name, text)
    server = daemon(listen=ssl_listen(cert, key))
    transcript.replay(TLSClient(server.port, cert), lambda type_name, text: notifctl("add", type_name, text))
    # notifctl watch connects over TLS too, checking the certificate.
    watcher = start_notifctl("watch", "--connect", f"tls:localhost:{server.port}:trustRoots={cert.parent}")
    assert watcher.stdout.readline() == "classified: Nice appart in the 11e.\n"  # a new anonymous client


def test_the_http_api_over_tls_posts_and_streams(daemon, notifctl, certificate):
    # `http.listen` takes ssl: entries as `listen` does: HTTPS with the same certificate options.
    import http.client

    from notifd.testing import HTTP_ON

    cert, key = certificate
    server = daemon("--http", ssl_listen(cert, key))
    port = int(HTTP_ON.search(server.logged(HTTP_ON)).group(2))
    assert server.logged(HTTP_ON).rstrip().endswith(f"on https://127.0.0.1:{port}/")
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    context = ssl.create_default_context(cafile=str(cert))
    stream = http.client.HTTPSConnection("localhost", port, timeout=TIMEOUT, context=context)
    stream.request("GET", "/v1/events?types=classified")
    events = stream.getresponse()
    assert events.status == 200 and events.readline() == b": notifd events\n"
    poster = http.client.HTTPSConnection("localhost", port, timeout=TIMEOUT, context=context)
    poster.request("POST", "/v1/items/classified", body="Over TLS.", headers={"Authorization": f"Bearer {token}"})
    posted = poster.getresponse()
    assert posted.status == 201 and json.loads(posted.read())["text"] == "Over TLS."
    lines = [events.readline() for _ in range(4)]  # the comment's blank line, then the event
    assert lines[2] == b"event: classified\n" and json.loads(lines[3].removeprefix(b"data: "))["text"] == "Over TLS."
    stream.close()
    # Plain HTTP to that port gets no answer in HTTP.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/")


def test_plain_text_to_the_tls_port_is_refused_and_others_go_on(daemon, certificate):
    cert, key = certificate
    server = daemon(listen=ssl_listen(cert, key))
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    plain.sendall(b"random?\r\n")
    reply = plain.recv(4096)
    # A TLS alert record (content type 21), or the connection closed: never a protocol answer,
    # which for random? would be digits.
    assert reply == b"" or reply[:1] == b"\x15", reply
    assert TLSClient(server.port, cert).ask("random?").isdigit()


def test_the_log_and_status_name_a_tls_port_as_tls(daemon, notifctl, certificate):
    cert, key = certificate
    server = daemon(listen=ssl_listen(cert, key))
    assert f"notifd listening on TLS 127.0.0.1:{server.port}" in "".join(server.log)
    (node,) = json.loads(notifctl("status", "--json").stdout)["nodes"]
    assert node["listen"] == f"TLS 127.0.0.1:{server.port} HTTP 127.0.0.1:{server.http_port}"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_default_ciphers_are_forward_secret_only(daemon, rsa_certificate):
    cert, key = rsa_certificate
    server = daemon(listen=ssl_listen(cert, key))
    # RSA key exchange (no forward secrecy), which Twisted's own ssl: endpoint accepts.
    with pytest.raises(ssl.SSLError, match="handshake failure"):
        TLSClient(server.port, context=tls12_context("AES128-SHA", cert))
    client = TLSClient(server.port, context=tls12_context("ECDHE-RSA-AES128-GCM-SHA256", cert))
    assert client.sock.version() == "TLSv1.2" and client.sock.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    assert client.ask("random?").isdigit()
    # TLS 1.3 by default, and nothing older than 1.2.
    assert TLSClient(server.port, cert).sock.version() == "TLSv1.3"
    old = ssl.create_default_context(cafile=str(cert))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="alert protocol version"):  # the server's answer
        TLSClient(server.port, context=old)


def test_tls_ciphers_changes_what_is_accepted(daemon, rsa_certificate, tmp_path):
    cert, key = rsa_certificate
    config = tmp_path / "notifd.toml"
    config.write_text('[tls]\nciphers = "AES128-SHA"\n')
    server = daemon("--config", str(config), listen=ssl_listen(cert, key))
    assert TLSClient(server.port, context=tls12_context("AES128-SHA", cert)).ask("random?").isdigit()
    with pytest.raises(ssl.SSLError, match="handshake failure"):
        TLSClient(server.port, context=tls12_context("ECDHE-RSA-AES128-GCM-SHA256", cert))
    # SIGHUP applies a new list (with the certificate read again) to new connections.
    config.write_text('[tls]\nciphers = "ECDHE+AESGCM"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(RELOADED)
    with pytest.raises(ssl.SSLError, match="handshake failure"):
        TLSClient(server.port, context=tls12_context("AES128-SHA", cert))
    assert TLSClient(server.port, context=tls12_context("ECDHE-RSA-AES128-GCM-SHA256", cert)).ask("random?").isdigit()


def test_a_cipher_string_that_selects_nothing_is_refused_naming_the_key(tmp_path, db_path):
    config = tmp_path / "notifd.toml"
    config.write_text('[tls]\nciphers = "NO-SUCH-CIPHER"\n')
    process = DaemonProcess(db_path, "--config", str(config))
    with pytest.raises(AssertionError, match=r"cannot start: tls.ciphers: 'NO-SUCH-CIPHER' selects no TLS 1.2 cipher"):
        process.start()


# --- SIGHUP reloads certificates ----------------------------------------------------------------------


def test_sighup_serves_the_new_certificate_to_new_connections_and_keeps_open_ones(daemon, tmp_path):
    old_cert, old_key = make_certificate(tmp_path, "old")
    new_cert, new_key = make_certificate(tmp_path, "new")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    server = daemon(listen=ssl_listen(cert, key))
    trust_both = ssl.create_default_context(cafile=str(old_cert))
    trust_both.load_verify_locations(cafile=str(new_cert))
    before = TLSClient(server.port, context=trust_both)
    assert before.certificate() == der(old_cert)

    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(RELOADED)
    after = TLSClient(server.port, context=trust_both)
    assert after.certificate() == der(new_cert)
    assert after.ask("random?").isdigit()
    assert before.ask("random?").isdigit()  # the open connection goes on, with its old certificate

    # Files that cannot be used: one error line, and the certificate in use stays.
    cert.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    line = server.wait_for_log(re.compile("SIGHUP: TLS certificate not reloaded"))
    assert line.rstrip("\n").endswith(f"still serving the old one: {cert}: no certificate in PEM format")
    assert TLSClient(server.port, context=trust_both).certificate() == der(new_cert)
    shutil.copy(new_cert, cert)
    shutil.copy(old_key, key)  # the key of another certificate
    server.proc.send_signal(signal.SIGHUP)
    line = server.wait_for_log(re.compile("SIGHUP: TLS certificate not reloaded"))
    assert f"the private key {key} is not the key of the certificate {cert}" in line
    assert TLSClient(server.port, context=trust_both).certificate() == der(new_cert)
    assert not [entry for entry in server.drained_log() if "Traceback" in entry]


def test_with_workers_every_worker_serves_the_new_certificate_after_sighup(daemon, tmp_path):
    old_cert, old_key = make_certificate(tmp_path, "old")
    new_cert, new_key = make_certificate(tmp_path, "new")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    server = daemon("--workers", "2", "--node", "box", listen=ssl_listen(cert, key))
    server.wait_for_log(re.compile(rf"notifd: 2 workers ready, sharing TLS 127\.0\.0\.1:{server.port}"))
    trust_both = ssl.create_default_context(cafile=str(old_cert))
    trust_both.load_verify_locations(cafile=str(new_cert))
    assert TLSClient(server.port, context=trust_both).certificate() == der(old_cert)

    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    server.proc.send_signal(signal.SIGHUP)  # to the parent, which passes it on
    reloaded = [server.wait_for_log(RELOADED) for _ in range(2)]  # once in each worker
    assert len(reloaded) == 2
    # The kernel spreads connections over both workers' sockets: all see the new certificate.
    clients = [TLSClient(server.port, context=trust_both) for _ in range(16)]
    assert {client.certificate() for client in clients} == {der(new_cert)}


# --- notifctl watch against a certificate it does not trust ---------------------------------------


@pytest.mark.parametrize("endpoint", ["tls:localhost:{port}", "ssl:host=127.0.0.1:port={port}:hostname=localhost"])
def test_watch_against_an_untrusted_certificate_is_one_line(daemon, notifctl, certificate, endpoint):
    cert, key = certificate
    server = daemon(listen=ssl_listen(cert, key))
    connect = endpoint.format(port=server.port)
    result = notifctl("watch", "--connect", connect, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"notifctl: cannot connect to {connect}: the server's TLS certificate is not trusted (certificate verify "
        "failed; for a private CA, add :trustRoots=DIR to the endpoint)\n"
    )


def test_watch_against_a_certificate_for_another_host_is_one_line(daemon, notifctl, certificate):
    cert, key = certificate
    server = daemon(listen=ssl_listen(cert, key))
    connect = f"ssl:host=127.0.0.1:port={server.port}:hostname=other.example:caCertsDir={cert.parent}"
    result = notifctl("watch", "--connect", connect, check=False)
    assert (result.returncode, result.stderr) == (
        1, f"notifctl: cannot connect to {connect}: the server's TLS certificate is not for this host name\n"
    )


def test_watch_refuses_a_tls_endpoint_that_checks_no_certificate(daemon, notifctl, certificate):
    cert, key = certificate
    server = daemon(listen=ssl_listen(cert, key))
    result = notifctl("watch", "--connect", f"ssl:127.0.0.1:{server.port}", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "would accept any certificate" in result.stderr
    assert "use tls:HOST:PORT" in result.stderr
