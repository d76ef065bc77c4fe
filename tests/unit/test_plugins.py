"""Plugins through the public hooks: registration, attribution of errors, isolation."""
from __future__ import annotations

import types

import pytest

from notifd import InvalidItem, ItemType, Notifier, hookimpl
from notifd.default_plugins import random_number
from notifd.plugins import PluginError, get_plugin_manager, item_types, notifiers


def plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, f in hooks.items():
        setattr(module, hook_name, hookimpl(f))
    return module


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


def test_hook_register_notifiers(database):
    seen = []
    recorder = plugin("recorder", register_notifiers=lambda register: register(Notifier("record", seen.append)))
    found = notifiers(get_plugin_manager([recorder]))
    assert [(plugin_name, n.name) for plugin_name, n in found] == [("recorder", "record")]
    found[0][1].notify("item")
    assert seen == ["item"]


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
