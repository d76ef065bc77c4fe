"""The plugins' life-cycle hooks: startup and shutdown, their context, their bounds; path-like
settings resolved against the configuration file; hooks that are not marked."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from twisted.internet import defer, task
from twisted.logger import formatEvent

from notifd.config import build, read_file
from notifd.plugins import (
    SHUTDOWN_TIMEOUT,
    STARTUP_TIMEOUT,
    Lifecycle,
    PluginError,
    get_plugin_manager,
    state_directory,
)
from tests.harness import plugin


def outcome(d):
    results = []
    d.addBoth(results.append)
    assert len(results) == 1, "not fired yet"
    return results[0]


def lifecycle(*plugins, settings=None, clock=None, tmp_path=Path("/nonexistent")):
    pm = get_plugin_manager(list(plugins), entry_points=False)
    return Lifecycle(pm, settings or {}, "/etc/notifd", tmp_path / "state", clock or task.Clock())


def test_hook_startup(tmp_path, logged):
    seen = []

    def startup(context):
        seen.append(context)
        context.log.info("started with {unit}", unit=context.settings["unit"])

    clock = task.Clock()
    life = lifecycle(plugin("weather", startup=startup), settings={"weather": {"unit": "C"}, "other": {"x": 1}},
                     clock=clock, tmp_path=tmp_path)
    assert outcome(life.start()) is None
    [context] = seen
    assert (context.name, context.settings, context.config_dir) == ("weather", {"unit": "C"}, Path("/etc/notifd"))
    assert context.state_dir == tmp_path / "state" and context.state_dir.is_dir()
    assert context.reactor is clock
    [event] = [e for e in logged if e.get("log_namespace") == "notifd.plugin.weather"]
    assert formatEvent(event) == "started with C"


def test_startup_hooks_run_in_load_order_each_waited_for(tmp_path):
    clock = task.Clock()
    calls, slow = [], defer.Deferred()
    first = plugin("first", startup=lambda: (calls.append("first"), slow)[1])
    second = plugin("second", startup=lambda context: calls.append("second"))
    started = lifecycle(first, second, clock=clock, tmp_path=tmp_path).start()
    assert calls == ["first"] and not started.called  # the second waits for the first's Deferred
    clock.advance(STARTUP_TIMEOUT - 1)
    slow.callback(None)
    assert calls == ["first", "second"] and outcome(started) is None


@pytest.mark.parametrize("behaviour, error", [
    ("raises", "startup failed: RuntimeError: no weather station"),
    ("fails", "startup failed: ConnectionRefusedError: Connection was refused by other side: nobody listens."),
    ("hangs", f"startup failed: timed out after {STARTUP_TIMEOUT} s"),
])
def test_a_startup_that_raises_fails_or_hangs_stops_the_start_naming_the_plugin(tmp_path, behaviour, error):
    from twisted.internet.error import ConnectionRefusedError

    def startup():
        if behaviour == "raises":
            raise RuntimeError("no weather station")
        if behaviour == "fails":
            return defer.fail(ConnectionRefusedError("nobody listens"))
        return defer.Deferred()

    clock = task.Clock()
    after = []
    life = lifecycle(plugin("station", startup=startup), plugin("later", startup=lambda: after.append(1)),
                     clock=clock, tmp_path=tmp_path)
    started = life.start()
    clock.advance(STARTUP_TIMEOUT)
    failure = outcome(started)
    assert failure.check(PluginError) and str(failure.value) == f"plugin station: {error}"
    assert after == []  # nothing started after it


def test_hook_shutdown(tmp_path):
    clock = task.Clock()
    calls = []
    closing = defer.Deferred()

    def closer(name, result=None):
        return lambda context: (calls.append((name, context.name)), result)[1]

    life = lifecycle(
        plugin("a", startup=lambda: None, shutdown=closer("a")),
        plugin("b", shutdown=closer("b", closing)),  # no startup: shut down all the same
        plugin("c", startup=lambda: None, shutdown=closer("c")),
        clock=clock, tmp_path=tmp_path,
    )
    outcome(life.start())
    stopped = life.stop()
    assert calls == [("c", "c"), ("b", "b"), ("a", "a")]  # reverse load order, each with its context
    assert not stopped.called  # waits for b's Deferred
    closing.callback(None)
    assert stopped.called


def test_a_shutdown_that_hangs_or_raises_is_logged_and_the_stop_goes_on(tmp_path, logged):
    clock = task.Clock()
    never = defer.Deferred()
    life = lifecycle(
        plugin("stuck", shutdown=lambda: never),
        plugin("broken", shutdown=lambda: 1 / 0),
        clock=clock, tmp_path=tmp_path,
    )
    outcome(life.start())
    stopped = life.stop()
    clock.advance(SHUTDOWN_TIMEOUT - 0.1)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and never.called  # cancelled
    shown = sorted(formatEvent(e) for e in logged if e.get("log_namespace", "").startswith("notifd.plugin."))
    assert shown == [
        "plugin broken failed in shutdown: ZeroDivisionError: division by zero",
        f"plugin stuck failed in shutdown: timed out after {SHUTDOWN_TIMEOUT} s",
    ]


def test_only_plugins_that_started_are_shut_down(tmp_path):
    clock = task.Clock()
    calls = []
    life = lifecycle(
        plugin("a", startup=lambda: None, shutdown=lambda: calls.append("a")),
        plugin("b", startup=lambda: 1 / 0, shutdown=lambda: calls.append("b")),
        plugin("c", startup=lambda: None, shutdown=lambda: calls.append("c")),
        clock=clock, tmp_path=tmp_path,
    )
    assert outcome(life.start()).check(PluginError)
    outcome(life.stop())
    assert calls == ["a"]


def test_a_daemon_that_never_began_starting_calls_no_shutdown(tmp_path):
    calls = []
    life = lifecycle(plugin("a", shutdown=lambda: calls.append("a")), tmp_path=tmp_path)
    outcome(life.stop())
    assert calls == []


def test_the_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/notifd:/var/lib/other")
    assert state_directory("/anywhere/notifd.db") == Path("/var/lib/notifd")  # systemd's, first
    monkeypatch.delenv("STATE_DIRECTORY")
    assert state_directory(str(tmp_path / "notifd.db")) == tmp_path  # beside the SQLite database
    import platformdirs

    assert state_directory("postgresql://db.example/notifd") == platformdirs.user_data_path("notifd")


# --- path-like settings are relative to the configuration file --------------------------------


def test_path_like_plugin_settings_are_resolved_against_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "etc" / "notifd.toml"
    config.parent.mkdir()
    config.write_text(textwrap.dedent("""
        [plugins.weather]
        log_file = "weather.log"
        state_dir = "/var/lib/weather"
        cache_path = "~/cache"
        ca_files = ["ca.pem", "/etc/ssl/other.pem"]
        profile = "relative"
        url_base = "relative"
        directories = ["spool", "/srv/spool"]
        nested = [{ path = "in-a-list.json", name = "kept" }]
        [plugins.weather.station]
        path = "station.json"
        [[plugins.weather.targets]]
        path = "t.log"
    """))
    monkeypatch.setenv("HOME", "/home/you")
    monkeypatch.chdir(tmp_path)  # a relative --config is read from here, paths from its directory
    settings = build(read_file("etc/notifd.toml"))
    etc = tmp_path / "etc"
    assert settings.config_dir == str(etc)
    assert settings.plugins["weather"] == {
        "log_file": str(etc / "weather.log"),
        "state_dir": "/var/lib/weather",
        "cache_path": "/home/you/cache",
        "ca_files": [str(etc / "ca.pem"), "/etc/ssl/other.pem"],
        "profile": "relative",  # not a path-like key: left as written
        "url_base": "relative",
        "directories": [str(etc / "spool"), "/srv/spool"],
        "nested": [{"path": str(etc / "in-a-list.json"), "name": "kept"}],  # arrays of tables too
        "station": {"path": str(etc / "station.json")},
        "targets": [{"path": str(etc / "t.log")}],
    }


@pytest.mark.parametrize("written, expected", [
    ("notifd.db", "{etc}/notifd.db"),  # a relative file: next to the configuration file
    ("/srv/notifd/notifd.db", "/srv/notifd/notifd.db"),
    ("~/notifd.db", "/home/you/notifd.db"),
    ("sqlite:///relative.db", "sqlite:///relative.db"),  # a URL is taken as written
    ("postgresql://notifd@db.example/notifd", "postgresql://notifd@db.example/notifd"),
])
def test_the_database_file_is_relative_to_the_config_file_not_to_where_notifd_starts(
    tmp_path, monkeypatch, written, expected
):
    config = tmp_path / "etc" / "notifd.toml"
    config.parent.mkdir()
    config.write_text(f'db = "{written}"\n')
    monkeypatch.setenv("HOME", "/home/you")
    monkeypatch.chdir("/")
    assert build(read_file(config)).db == expected.format(etc=tmp_path / "etc")


# --- a hook without @hookimpl -----------------------------------------------------------------


def test_a_function_named_like_a_hook_without_hookimpl_is_warned_about(tmp_path):
    (tmp_path / "weather.py").write_text(textwrap.dedent("""
        from notifd import ItemType, hookimpl

        def register_item_types(register):
            register(ItemType("weather"))

        @hookimpl
        def startup(context):
            pass

        def shutdown_soon():  # not a hook's name
            pass
    """))
    pm = get_plugin_manager(dirs=[tmp_path], entry_points=False)
    assert pm.warnings == [
        f"plugin weather ({tmp_path / 'weather.py'}): register_item_types() is not marked @hookimpl, "
        "so notifd never calls it"
    ]
    assert get_plugin_manager(entry_points=False).warnings == []  # the built-ins are marked


# --- dotted notifier names in TOML --------------------------------------------------------------


def test_a_dotted_notifier_name_is_written_in_quotes(tmp_path):
    from notifd.config import ConfigError

    path = tmp_path / "notifd.toml"
    path.write_text('[notifiers."mail.ops"]\ntimeout = 5\n')
    assert build(read_file(path)).notifiers == {"mail.ops": {"timeout": 5.0}}
    path.write_text("[notifiers.mail.ops]\ntimeout = 5\n")
    with pytest.raises(ConfigError) as caught:
        read_file(path)
    assert str(caught.value) == (
        f'config file {path}: notifiers.mail.ops: a notifier name with dots is written in quotes: '
        '[notifiers."mail.ops"]'
    )


def test_a_fresh_value_that_fails_in_notifctl_is_one_line(cli, tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "dice.py").write_text(textwrap.dedent("""
        from notifd import ItemType, hookimpl

        def fresh():
            raise OSError("no entropy")

        @hookimpl
        def register_item_types(register):
            register(ItemType("dice", fresh=fresh))
    """))
    result = cli("--plugins-dir", str(tmp_path / "plugins"), "add", "dice")
    assert (result.code, result.err) == (1, "notifctl: the dice plugin failed to draw a fresh value: OSError: no entropy\n")
    assert cli("list").out == ""  # nothing stored
