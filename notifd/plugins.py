# Finding plugins and entering their code. The plugin manager is built by a factory (no
# module-global), with the built-in item types registered like any other plugin.
#
# Rule: plugin code is entered through this module only: registration hooks through
# `item_types()` / `notifiers()`, which name the plugin in any error, and notifiers
# through `call_plugin()`, which never lets an exception out.
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .items import ItemType, Notifier

DEFAULT_PLUGINS = (
    "notifd.default_plugins.classified",
    "notifd.default_plugins.random_number",
)


class PluginError(Exception):
    """A plugin failed to load or register; the message names it."""


def get_plugin_manager(extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager holding the built-ins, then `extra` plugin objects or modules."""
    pm = pluggy.PluginManager("notifd")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: type) -> list:
    """Call one registration hook plugin by plugin, so that an error names its plugin."""
    collected: list = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin_name = impl.plugin_name

        def register(thing: Any, plugin_name: str = plugin_name) -> None:
            if not isinstance(thing, kind):
                raise PluginError(
                    f"plugin {plugin_name}: {hook_name} registered {thing!r}, not a {kind.__name__}"
                )
            collected.append((plugin_name, thing))

        try:
            impl.function(**{name: register for name in impl.argnames})
        except PluginError:
            raise
        except Exception as e:
            raise PluginError(f"plugin {plugin_name}: {hook_name} failed: {type(e).__name__}: {e}") from e
    return collected


def item_types(pm: pluggy.PluginManager) -> dict[str, ItemType]:
    """Every registered item type by name, in registration order."""
    found: dict[str, ItemType] = {}
    owners: dict[str, str] = {}
    for plugin_name, item_type in _collect(pm, "register_item_types", ItemType):
        if item_type.name in found:
            raise PluginError(
                f"plugin {plugin_name}: item type {item_type.name!r} is already registered by {owners[item_type.name]}"
            )
        found[item_type.name] = item_type
        owners[item_type.name] = plugin_name
    return found


def notifiers(pm: pluggy.PluginManager) -> list[tuple[str, Notifier]]:
    """Every registered notifier with the name of its plugin."""
    return _collect(pm, "register_notifiers", Notifier)


def call_plugin(plugin_name: str, what: str, f: Callable[..., Any], *args: Any) -> None:
    """Call plugin code from the reactor thread: errors, raised or in a Deferred, are logged, never raised."""
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger

    log = Logger(namespace=f"notifd.plugin.{plugin_name}")
    try:
        result = f(*args)
    except Exception:
        log.failure("plugin {plugin} failed in {what}", plugin=plugin_name, what=what)
        return
    if isinstance(result, Deferred):
        result.addErrback(
            lambda failure: log.failure("plugin {plugin} failed in {what}", failure, plugin=plugin_name, what=what)
        )
