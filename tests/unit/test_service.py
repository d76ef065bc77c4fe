"""The daemon's assembly: what SIGHUP reloads, --check-config's output."""
from __future__ import annotations

import tomllib
from datetime import timedelta

import pytest
from twisted.internet.testing import MemoryReactorClock

from notifd.config import Config, ConfigError, build, effective, read_file
from notifd.service import Daemon, check


@pytest.fixture
def daemon(engine):
    return Daemon(Config(node="test"), MemoryReactorClock(), engine=engine)


def test_reload_applies_windows_and_limits_and_names_what_needs_a_restart(daemon):
    new = Config(
        node="test",
        max_line_length=100,
        types={"classified": {"recent_max_count": 1}},
        listen=("tcp:9999",),
        given=frozenset({"types", "listen", "max_line_length"}),
    )
    assert daemon.reload(new) == ["listen"]
    assert daemon.hub.windows["classified"].max_count == 1
    assert daemon.server.max_line == 100
    assert daemon.reload(new) == ["listen"]  # still not applied: still said
    assert daemon.reload(Config(node="test")) == []  # put back as it runs: nothing to restart for


def test_each_registration_hook_is_called_once_per_start(engine):
    from notifd import ItemType, Notifier
    from notifd.plugins import get_plugin_manager
    from tests.harness import plugin

    calls = []
    counting = plugin(
        "counting",
        register_item_types=lambda register: calls.append("types") or register(ItemType("weather")),
        register_notifiers=lambda register: calls.append("notifiers") or register(Notifier("log", print)),
    )
    daemon = Daemon(Config(node="test"), MemoryReactorClock(), engine=engine,
                    plugin_manager=get_plugin_manager([counting]))
    assert sorted(calls) == ["notifiers", "types"]
    assert "weather" in daemon.types and daemon.server.type_plugins["weather"] == "counting"


def test_reload_refuses_settings_for_unknown_types(daemon):
    with pytest.raises(ConfigError, match="types.weather"):
        daemon.reload(Config(node="test", types={"weather": {"retention": None}}))


def test_check_config_prints_the_effective_configuration_with_secrets_masked(tmp_path):
    path = tmp_path / "notifd.toml"
    path.write_text(
        'db = "postgresql+psycopg://notifd:hunter2@db.example/notifd"\n'
        'listen = ["tcp:8789", "tcp6:8789"]\n'
        '[retention]\nmax_age = "90d"\n'
        '[types.classified]\nrecent_max_age = "2d"\n'
    )
    config = build(read_file(path), log_level="debug")
    out = check(config)
    assert "hunter2" not in out
    # What it prints is the effective configuration, as a file notifd accepts, meaning the same.
    expected = effective(config)
    expected["db"] = "postgresql+psycopg://notifd:********@db.example/notifd"
    assert out.startswith(f"# not set: {', '.join(_unset(expected))}\n")
    shown = tomllib.loads(out)
    assert shown == _as_toml_data(expected)
    assert shown["listen"] == ["tcp:8789", "tcp6:8789"] and shown["log"]["level"] == "debug"
    assert shown["retention"]["max_age"] == "90d" and shown["types"] == {"classified": {"recent_max_age": "2d"}}
    again = tmp_path / "again.toml"
    again.write_text(out)
    assert build(read_file(again)).retention == timedelta(days=90)


def _unset(settings, prefix=""):
    """The dotted keys whose value is None, at any depth, in order."""
    found = []
    for key, value in settings.items():
        if value is None:
            found.append(prefix + key)
        elif isinstance(value, dict):
            found += _unset(value, f"{prefix}{key}.")
    return found


def _as_toml_data(value):
    # What tomllib reads back: no None (TOML has no null), lists for tuples.
    if isinstance(value, dict):
        return {key: _as_toml_data(v) for key, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_as_toml_data(v) for v in value]
    return value


def test_check_config_refuses_a_bad_endpoint():
    with pytest.raises(ConfigError, match="listen: bad endpoint 'tcpp:80'"):
        check(Config(listen=("tcpp:80",)))


@pytest.mark.parametrize("config, message", [
    (Config(listen=("tcp:99999",)), "listen: bad endpoint 'tcp:99999': port 99999 is not in 0-65535"),
    (Config(http_listen=("tcp6:port=70000",)), "http.listen: bad endpoint 'tcp6:port=70000': port 70000 is not in 0-65535"),
    (Config(metrics="tcp:65536:interface=127.0.0.1"),
     "metrics: bad endpoint 'tcp:65536:interface=127.0.0.1': port 65536 is not in 0-65535"),
])
def test_check_config_refuses_a_port_the_start_would_fail_on(config, message):
    with pytest.raises(ConfigError) as raised:
        check(config)
    assert str(raised.value) == message


def test_check_config_refuses_a_tls_port_out_of_range(tmp_path):
    from tests.certs import make_certificate

    cert, key = make_certificate(tmp_path)
    listen = f"ssl:99999:privateKey={key}:certKey={cert}"
    with pytest.raises(ConfigError) as raised:
        check(Config(listen=(listen,)))
    assert str(raised.value) == f"listen: bad endpoint {listen!r}: port 99999 is not in 0-65535"


def test_reload_refuses_a_cipher_string_that_selects_nothing(daemon):
    with pytest.raises(ConfigError, match="tls.ciphers: 'NO-SUCH-CIPHER' selects no TLS 1.2 cipher"):
        daemon.reload(Config(node="test", tls_ciphers="NO-SUCH-CIPHER"))
    assert daemon.config.tls_ciphers is None  # nothing applied


def test_check_config_checks_tls_ciphers_and_reads_the_certificates(tmp_path):
    with pytest.raises(ConfigError, match="tls.ciphers: 'NO-SUCH-CIPHER' selects no TLS 1.2 cipher"):
        check(Config(tls_ciphers="NO-SUCH-CIPHER"))
    listen = f"ssl:8790:privateKey={tmp_path}/key.pem"
    with pytest.raises(ConfigError) as raised:
        check(Config(listen=(listen,)))
    assert str(raised.value) == f"listen: bad endpoint {listen!r}: cannot read {tmp_path}/key.pem: No such file or directory"
