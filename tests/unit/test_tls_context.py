"""notifd/tls.py: `ssl:` entries read as Twisted reads them, files that cannot be used named in
one line, the chain after the certificate kept, cipher strings checked."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from notifd import tls
from notifd.config import ConfigError
from tests.certs import make_certificate


@pytest.fixture
def files(tmp_path):
    return make_certificate(tmp_path)


def test_an_ssl_entry_means_what_it_means_to_twisted(tmp_path):
    entry = tls.parse(r"ssl:8790:privateKey=/k\:ey.pem:certKey=/cert.pem:interface=127.0.0.1:backlog=500")
    assert (entry.port, entry.interface, entry.backlog) == (8790, "127.0.0.1", 500)
    assert (entry.private_key, entry.certificate) == ("/k:ey.pem", "/cert.pem")
    both = tls.parse("ssl:port=8790:privateKey=/both.pem")  # certKey defaults to the key's file
    assert (both.port, both.certificate, both.backlog, both.interface) == (8790, "/both.pem", 50, "")


@pytest.mark.parametrize("description, error", [
    ("ssl:8790:privateKey=k.pem:sslmethod=TLSv1_2_METHOD", "sslmethod= is not supported"),
    ("ssl:8790:privateKey=k.pem:certkey=c.pem", "unexpected keyword argument 'certkey'"),
    ("ssl:privateKey=k.pem", "missing 1 required positional argument: 'port'"),
    ("ssl:http:privateKey=k.pem", "the port and backlog= must be numbers"),
])
def test_a_bad_ssl_entry_is_one_clear_line(description, error):
    with pytest.raises(tls.TLSError, match=error):
        tls.parse(description)


def test_the_context_offers_forward_secret_ciphers_only(files):
    cert, key = files
    context = tls.load(tls.parse(f"ssl:0:privateKey={key}:certKey={cert}")).getContext()
    ciphers = SSL.Connection(context).get_cipher_list()
    tls12 = [name for name in ciphers if not name.startswith("TLS_")]
    assert tls12 and all(name.startswith(("ECDHE-", "DHE-")) and ("GCM" in name or "CHACHA20" in name) for name in tls12)
    assert "AES128-SHA" not in ciphers


def test_the_chain_after_the_certificate_is_kept(tmp_path):
    ca = make_certificate(tmp_path, "ca")
    leaf_cert, leaf_key = make_certificate(tmp_path, "leaf", ca=ca)
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_bytes(leaf_cert.read_bytes() + ca[0].read_bytes())
    options = tls.load(tls.parse(f"ssl:0:privateKey={leaf_key}:certKey={fullchain}"))
    assert [c.subject.rfc4514_string() for c in options.extraCertChain] == ["CN=localhost ca"]
    assert options.certificate.subject.rfc4514_string() == "CN=localhost leaf"


def test_files_that_cannot_be_used_are_named_in_one_line(tmp_path, files):
    cert, key = files
    other_cert, other_key = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    encrypted = tmp_path / "encrypted.key"
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    cases = {
        f"privateKey={tmp_path}/missing.key:certKey={cert}": f"cannot read {tmp_path}/missing.key: No such file or directory",
        f"privateKey={key}:certKey={garbage}": f"{garbage}: no certificate in PEM format",
        f"privateKey={garbage}:certKey={cert}": f"{garbage}: not an unencrypted private key in PEM format",
        f"privateKey={encrypted}:certKey={cert}": f"{encrypted}: not an unencrypted private key in PEM format",
        f"privateKey={other_key}:certKey={cert}": f"the private key {other_key} is not the key of the certificate {cert}",
        f"privateKey={key}:certKey={cert}:extraCertChain={garbage}": f"{garbage}: no certificate in PEM format",
        f"privateKey={key}:certKey={cert}:dhParameters={tmp_path}/dh.pem": f"cannot read {tmp_path}/dh.pem: No such file",
        f"privateKey={key}:certKey={cert}:dhParameters={garbage}": f"{garbage}: ",
    }
    for options, error in cases.items():
        with pytest.raises(tls.TLSError) as raised:
            tls.load(tls.parse(f"ssl:0:{options}"))
        assert str(raised.value).startswith(error) and "\n" not in str(raised.value), options


def test_a_cipher_string_must_select_a_tls_1_2_cipher():
    tls.check_ciphers(None)
    tls.check_ciphers("ECDHE+AESGCM")
    for wrong in ("NO-SUCH-CIPHER", "TLS_AES_128_GCM_SHA256"):  # a TLS 1.3 suite is not a TLS 1.2 cipher
        with pytest.raises(ConfigError, match=f"tls.ciphers: '{wrong}' selects no TLS 1.2 cipher"):
            tls.check_ciphers(wrong)


def test_the_example_config_shows_the_default_ciphers():
    from pathlib import Path

    example = (Path(__file__).parents[2] / "contrib" / "notifd.toml").read_text()
    assert f'# ciphers = "{tls.DEFAULT_CIPHERS}"\n' in example
