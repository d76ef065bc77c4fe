"""Plugins through the public hooks: registration, attribution of errors, isolation."""
from __future__ import annotations

import importlib.util
import os
import py_compile
import re
import textwrap

import pytest
from twisted.internet import defer, task
from twisted.logger import formatEvent

from notifd import ConfigError, InvalidItem, ItemType, Notifier
from notifd.default_plugins import random_number
from notifd.plugins import (
    PluginError,
    call_plugin,
    describe,
    errors,
    get_plugin_manager,
    item_types,
    notifiers,
)
from tests.dist import install
from tests.harness import plugin


def test_hook_register_item_types():
    weather = plugin("weather", register_item_types=lambda register: register(ItemType("weather")))
    found = item_types(get_plugin_manager([weather]))
    assert list(found) == ["classified", "random", "weather"]


def test_two_plugins_cannot_declare_the_same_type():
    clash = plugin("clash", register_item_types=lambda register: register(ItemType("classified")))
    with pytest.raises(PluginError, match=r"^plugin clash: item type 'classified' is already registered by "
                                          r"classified$"):
        item_types(get_plugin_manager([clash]))


def test_a_plugin_that_raises_while_registering_is_named():
    def broken(register):
        raise KeyError("oops")

    with pytest.raises(PluginError, match=r"^plugin broken: register_item_types failed: KeyError: 'oops'$"):
        item_types(get_plugin_manager([plugin("broken", register_item_types=broken)]))


def test_a_plugin_that_registers_something_else_is_named():
    odd = plugin("odd", register_item_types=lambda register: register("weather"))
    with pytest.raises(PluginError, match=r"^plugin odd: register_item_types registered 'weather', not a ItemType$"):
        item_types(get_plugin_manager([odd]))


def test_bad_type_names_are_refused():
    with pytest.raises(ValueError, match="must match"):
        ItemType("Weather Report")


def test_hook_register_notifiers():
    seen = []
    reactor = object()

    def register_notifiers(register, settings, reactor):
        register(Notifier(settings["name"], lambda item: seen.append((item, reactor))))

    recorder = plugin("recorder", register_notifiers=register_notifiers)
    found = notifiers(get_plugin_manager([recorder]), {"recorder": {"name": "record"}}, reactor)
    assert [(plugin_name, n.name, n.durable) for plugin_name, n in found] == [("recorder", "record", False)]
    found[0][1].notify("item")
    assert seen == [("item", reactor)]


def test_each_plugin_gets_its_own_settings_and_only_the_arguments_it_declares():
    got = {}
    one = plugin("one", register_item_types=lambda register, settings: got.update(one=settings))
    two = plugin("two", register_item_types=lambda register: got.update(two="called"))
    item_types(get_plugin_manager([one, two]), {"one": {"unit": "C"}, "other": {"x": 1}})
    assert got == {"one": {"unit": "C"}, "two": "called"}


def test_a_bad_setting_is_reported_with_the_plugin_and_its_table():
    def register_notifiers(register, settings):
        raise ConfigError("url: expected an http:// URL")

    with pytest.raises(PluginError, match=r"^plugin hook: \[plugins.hook\] url: expected an http:// URL$"):
        notifiers(get_plugin_manager([plugin("hook", register_notifiers=register_notifiers)]), {"hook": {}})


def test_two_plugins_cannot_declare_the_same_notifier():
    def one(register):
        register(Notifier("mail", print))

    with pytest.raises(PluginError, match=r"^plugin b: notifier 'mail' is already registered by a$"):
        notifiers(get_plugin_manager([plugin("a", register_notifiers=one), plugin("b", register_notifiers=one)]))


# --- discovery ------------------------------------------------------------------------------


def write_plugin(directory, name, source):
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


WEATHER = """
    from notifd import ItemType, hookimpl

    @hookimpl
    def register_item_types(register):
        register(ItemType("weather"))
"""


def test_plugins_dirs_are_loaded_file_by_file(tmp_path):
    write_plugin(tmp_path / "a", "weather", WEATHER)
    write_plugin(tmp_path / "b", "jobs", WEATHER.replace('"weather"', '"jobs"'))
    write_plugin(tmp_path / "b", "_helper", "raise RuntimeError('helpers are not plugins')")
    pm = get_plugin_manager(dirs=[tmp_path / "a", tmp_path / "b"])
    assert list(item_types(pm)) == ["classified", "random", "weather", "jobs"]
    assert pm.origins["weather"] == str(tmp_path / "a" / "weather.py")
    assert pm.origins["classified"] == "built-in"


def test_a_plugin_file_runs_from_its_checked_source_never_from_a_cached_pyc(tmp_path):
    # A __pycache__ that no one checked could hold other code, for the same size and mtime.
    plugin = tmp_path / "weather.py"
    plugin.write_text(textwrap.dedent(WEATHER.replace('"weather"', '"tornado"')))
    py_compile.compile(str(plugin), cfile=importlib.util.cache_from_source(str(plugin)))
    mtime = plugin.stat().st_mtime_ns
    plugin.write_text(textwrap.dedent(WEATHER))
    os.utime(plugin, ns=(mtime, mtime))
    assert list(item_types(get_plugin_manager(dirs=[tmp_path]))) == ["classified", "random", "weather"]


@pytest.mark.parametrize(
    "source, message",
    [
        ("def broken(:\n", r"cannot import: SyntaxError: "),
        ("import no_such_module_here\n", r"cannot import: ModuleNotFoundError: No module named 'no_such_module_here'"),
        ("raise RuntimeError('no config')\n", r"cannot import: RuntimeError: no config"),
        (
            "from notifd import hookimpl\n@hookimpl\ndef register_item_type(register): pass\n",
            r"unknown hook 'register_item_type'",
        ),
        (
            "from notifd import hookimpl\n@hookimpl\ndef register_item_types(register, colour): pass\n",
            r"Argument\(s\) \{'colour'\} are declared in the hookimpl but can not be found in the hookspec",
        ),
    ],
)
def test_a_plugin_file_that_cannot_load_is_named(tmp_path, source, message):
    write_plugin(tmp_path, "weather", source)
    with pytest.raises(PluginError) as caught:
        get_plugin_manager(dirs=[tmp_path])
    assert str(caught.value).startswith("plugin weather")
    assert re.search(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_plugins_dir_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(PluginError, match=r"^plugins directory .*/nowhere: not a directory$"):
        get_plugin_manager(dirs=[tmp_path / "nowhere"])


def test_a_plugin_name_is_taken_once(tmp_path):
    write_plugin(tmp_path, "classified", WEATHER)
    with pytest.raises(PluginError, match=r"^plugin classified \(.*classified.py\): the name is already taken by built-in$"):
        get_plugin_manager(dirs=[tmp_path])


def install_entry_point(site, name, module, source, monkeypatch):
    project = {"name": f"notifd-{name}", "version": "1.2", "entry-points": {"notifd": {name: module}}}
    install(site, project, textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(site))


def test_entry_points_in_the_notifd_group_are_loaded(tmp_path, monkeypatch):
    install_entry_point(tmp_path, "weather", "ep_weather_plugin", WEATHER, monkeypatch)
    pm = get_plugin_manager()
    assert "weather" in item_types(pm)
    assert pm.origins["weather"] == "entry point ep_weather_plugin in notifd-weather 1.2"
    assert "weather" not in item_types(get_plugin_manager(entry_points=False))


def test_an_entry_point_that_cannot_load_is_named(tmp_path, monkeypatch):
    install_entry_point(tmp_path, "weather", "ep_broken_plugin", "import no_such_dependency\n", monkeypatch)
    with pytest.raises(PluginError, match=r"^plugin weather \(entry point ep_broken_plugin in notifd-weather 1.2\): "
                                          r"cannot import: ModuleNotFoundError"):
        get_plugin_manager()


def test_describe_says_where_each_plugin_came_from_and_what_it_adds(tmp_path):
    write_plugin(tmp_path, "weather", WEATHER + """
    from notifd import Notifier

    @hookimpl
    def register_notifiers(register):
        register(Notifier("weather-log", print, durable=True))
""")
    found = {info.name: info for info in describe(get_plugin_manager(dirs=[tmp_path]))}
    assert list(found) == ["classified", "random", "apprise", "weather"]
    weather = found["weather"]
    assert (weather.origin, weather.item_types) == (str(tmp_path / "weather.py"), ["weather"])
    assert [(n.name, n.durable) for n in weather.notifiers] == [("weather-log", True)]
    assert found["apprise"].notifiers == []  # not configured


# --- the door from the reactor: call_plugin ---------------------------------------------------


def outcome(d):
    results = []
    d.addBoth(results.append)
    assert len(results) == 1, "not fired yet"
    return results[0]


def test_call_plugin_catches_logs_and_counts_an_exception(logged):
    before = errors["bad"]

    def notify(item):
        raise KeyError("type")

    assert outcome(call_plugin("bad", "notifier n", notify, "item")) == "KeyError: 'type'"
    assert errors["bad"] == before + 1
    [event] = [e for e in logged if e.get("plugin") == "bad"]
    assert formatEvent(event) == "plugin bad failed in notifier n: KeyError: 'type'"
    assert event["log_failure"].check(KeyError)  # a bug: logged with its traceback


def test_call_plugin_reports_a_failed_deferred_on_one_line(logged):
    d = defer.Deferred()
    result = call_plugin("flaky", "notifier n", lambda: d)
    d.errback(ConnectionRefusedError("nobody listens"))
    assert outcome(result) == "ConnectionRefusedError: nobody listens"
    [event] = [e for e in logged if e.get("plugin") == "flaky"]
    assert "log_failure" not in event


def test_call_plugin_times_out_a_deferred_that_never_fires(logged):
    clock = task.Clock()
    before = errors["slow"]
    never = defer.Deferred()
    result = call_plugin("slow", "notifier n", lambda: never, timeout=10.0, clock=clock)
    clock.advance(9.9)
    assert not result.called
    clock.advance(0.1)
    assert outcome(result) == "timed out after 10.0 s"
    assert errors["slow"] == before + 1


def test_call_plugin_success():
    assert outcome(call_plugin("good", "notifier n", lambda item: None, "item")) is None
    assert outcome(call_plugin("good", "notifier n", lambda item: defer.succeed("ignored"), "item")) is None


def test_random_validation():
    assert random_number.validate(" 0042 ") == "42"
    assert random_number.validate("-3") == "-3"
    for bad in ("4.2", "0x10", "١٢", "1 2", ""):
        with pytest.raises(InvalidItem):
            random_number.validate(bad)
    assert 0 <= int(random_number.fresh()) < random_number.UPPER


def test_the_built_ins_use_only_the_public_api():
    import notifd.default_plugins.classified as classified

    for module in (classified, random_number):
        source = open(module.__file__).read()
        assert "from notifd import" in source
        assert "notifd." not in source.replace("from notifd import", "")
