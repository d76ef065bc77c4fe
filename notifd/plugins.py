# Finding plugins and entering their code. The plugin manager is built by a factory (no
# module-global): the built-ins first, then setuptools entry points in the group "notifd",
# then every `*.py` file of each plugins directory, then objects the caller passes.
#
# Rule: plugin code is entered through this module only: registration hooks through
# `item_types()` / `notifiers()`, which name the plugin in any error, and everything the
# reactor calls (notifiers, the startup and shutdown hooks through `Lifecycle`) through
# `call_plugin()`, which never lets an exception out, applies the timeout, logs with the
# plugin's name and counts the failure.
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pluggy

from . import hookspecs, strictmodes
from .config import ConfigError
from .errors import first_line
from .items import ItemType, Notifier

ENTRY_POINT_GROUP = "notifd"

# Plugin name -> module. The name is what `notifctl plugins` shows and what the
# configuration's `[plugins.<name>]` table is given to.
DEFAULT_PLUGINS = {
    "classified": "notifd.default_plugins.classified",
    "random": "notifd.default_plugins.random_number",
    "apprise": "notifd.default_plugins.apprise_notifier",
}

STARTUP_TIMEOUT = 30.0  # seconds a plugin's startup may take before the start fails
SHUTDOWN_TIMEOUT = 10.0  # seconds the shutdown hooks may take, together, before the stop goes on

errors: Counter[str] = Counter()
"""Failures of plugin code entered through `call_plugin`, per plugin, since the process started."""


class PluginError(Exception):
    """A plugin failed to load or register; the message names it."""


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, remembering where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("notifd")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}
        self.warnings: list[str] = []  # mistakes that load nonetheless: the programs show them

    def add(self, plugin: object, name: str, origin: str) -> None:
        """Register `plugin` as `name`; a second plugin of the same name is an error."""
        if name in self.origins:
            raise PluginError(f"plugin {name} ({origin}): the name is already taken by {self.origins[name]}")
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            # pluggy's message: "Plugin ... for hook X", the definition, then the reason.
            lines = str(e).splitlines()
            hook = lines[0].rpartition(" for hook ")[2].strip("'")
            raise PluginError(f"plugin {name} ({origin}): {hook}: {lines[-1]}") from e
        except ValueError as e:
            raise PluginError(f"plugin {name} ({origin}): {first_line(e)}") from e
        # A hook name with a typo would otherwise never be called; say so now.
        unknown = sorted(caller.name for caller in self.get_hookcallers(plugin) or () if caller.spec is None)
        if unknown:
            self.unregister(plugin)
            raise PluginError(f"plugin {name} ({origin}): unknown hook {unknown[0]!r}")
        self.origins[name] = origin
        for hook in _unmarked_hooks(plugin):
            self.warnings.append(
                f"plugin {name} ({origin}): {hook}() is not marked @hookimpl, so notifd never calls it"
            )


def _unmarked_hooks(plugin: object) -> list[str]:
    """Functions of a plugin module named like a hook but not marked as one (a forgotten @hookimpl)."""
    found = []
    for name in sorted(hookspecs.NAMES):
        value = getattr(plugin, name, None)
        if callable(value) and not hasattr(value, "notifd_impl"):  # the attribute HookimplMarker sets
            found.append(name)
    return found


def get_plugin_manager(
    extra: Iterable[object] = (), dirs: Iterable[str | Path] = (), entry_points: bool = True
) -> PluginManager:
    """A plugin manager holding the built-ins, the entry points, the files of `dirs`, then `extra`.

    Raises PluginError, naming the plugin, when one cannot be imported or registered.
    """
    pm = PluginManager()
    for name, module_name in DEFAULT_PLUGINS.items():
        pm.add(importlib.import_module(module_name), name, "built-in")
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            origin = _entry_point_origin(entry_point)
            pm.add(_load(entry_point.name, origin, entry_point.load), entry_point.name, origin)
    for directory in dirs:
        for path in _plugin_files(Path(directory).expanduser()):
            _trust(path, f"plugin {path.stem} ({path})")
            pm.add(_load(path.stem, str(path), lambda path=path: _import_file(path)), path.stem, str(path))
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.add(plugin, name, "passed in by the program")
    return pm


def _entry_point_origin(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    package = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown package"
    return f"entry point {entry_point.value} in {package}"


def _plugin_files(given: Path) -> list[Path]:
    directory = given.resolve()
    if not directory.is_dir():
        raise PluginError(f"plugins directory {directory}: not a directory")
    _trust(given, f"plugins directory {directory}")
    # Files starting with "_" are helpers, not plugins.
    return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))


def _trust(path: Path, what: str) -> None:
    # Code that someone else could have written would run as our user, often root.
    try:
        strictmodes.check_path(path)
    except strictmodes.Untrusted as e:
        raise PluginError(f"{what}: refused: {e}") from None


def _load(name: str, origin: str, load: Callable[[], object]) -> object:
    try:
        return load()
    except Exception as e:
        raise PluginError(f"plugin {name} ({origin}): cannot import: {type(e).__name__}: {first_line(e)}") from e


def _import_file(path: Path) -> object:
    # A name of its own, in sys.modules (dataclasses and pickling look there), that shadows
    # no installed package.
    module_name = f"notifd_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        # Compiled from the checked source itself: the import system would also run, and
        # write, a cached __pycache__/*.pyc, which no one checked.
        exec(compile(path.read_bytes(), str(path), "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module



# --- registration hooks ------------------------------------------------------------------


def _collect(
    pm: pluggy.PluginManager, hook_name: str, kind: type, settings: Mapping[str, Mapping], **shared: Any
) -> list:
    """Call one registration hook plugin by plugin, so that an error names its plugin.

    Each plugin gets its own `settings` (its `[plugins.<name>]` table) and the `shared`
    arguments it asks for.
    """
    collected: list = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin_name = impl.plugin_name

        def register(thing: Any, plugin_name: str = plugin_name) -> None:
            if not isinstance(thing, kind):
                raise PluginError(
                    f"plugin {plugin_name}: {hook_name} registered {thing!r}, not a {kind.__name__}"
                )
            collected.append((plugin_name, thing))

        available = {"register": register, "settings": dict(settings.get(plugin_name, {})), **shared}
        try:
            impl.function(**{name: available[name] for name in impl.argnames})
        except PluginError:
            raise
        except ConfigError as e:
            raise PluginError(f"plugin {plugin_name}: [plugins.{plugin_name}] {e}") from e
        except Exception as e:
            raise PluginError(f"plugin {plugin_name}: {hook_name} failed: {type(e).__name__}: {e}") from e
    return collected


def item_types(pm: pluggy.PluginManager, settings: Mapping[str, Mapping] = {}) -> dict[str, ItemType]:
    """Every registered item type by name, in registration order."""
    return {item_type.name: item_type for _, item_type in owned_item_types(pm, settings)}


def owned_item_types(pm: pluggy.PluginManager, settings: Mapping[str, Mapping] = {}) -> list[tuple[str, ItemType]]:
    """Every registered item type with the name of its plugin, in registration order.

    Calls the plugins' `register_item_types`: the contract says once per start, so a
    program calls this (or `item_types`) once and keeps the result."""
    return _unique(_collect(pm, "register_item_types", ItemType, settings), "item type")


def notifiers(
    pm: pluggy.PluginManager, settings: Mapping[str, Mapping] = {}, reactor: Any = None
) -> list[tuple[str, Notifier]]:
    """Every registered notifier with the name of its plugin; notifier names are unique."""
    return _unique(_collect(pm, "register_notifiers", Notifier, settings, reactor=reactor), "notifier")


def _unique(found: list[tuple[str, Any]], what: str) -> list[tuple[str, Any]]:
    """Refuse a second registration of one name (item types, notifiers), naming both plugins."""
    owners: dict[str, str] = {}
    for plugin_name, thing in found:
        if thing.name in owners:
            raise PluginError(f"plugin {plugin_name}: {what} {thing.name!r} is already registered by {owners[thing.name]}")
        owners[thing.name] = plugin_name
    return found


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin as `notifctl plugins` shows it."""

    name: str
    origin: str
    item_types: list[str]
    notifiers: list[Notifier]


def describe(pm: PluginManager, settings: Mapping[str, Mapping] = {}, reactor: Any = None) -> list[PluginInfo]:
    """Each loaded plugin, where it came from, and what it adds (runs both registration hooks)."""
    types = owned_item_types(pm, settings)
    found = notifiers(pm, settings, reactor)
    return [
        PluginInfo(
            name=name,
            origin=origin,
            item_types=[t.name for plugin, t in types if plugin == name],
            notifiers=[n for plugin, n in found if plugin == name],
        )
        for name, origin in pm.origins.items()
    ]


# --- life-cycle hooks ---------------------------------------------------------------------


@dataclass(frozen=True)
class PluginContext:
    """What a plugin's `startup` and `shutdown` hooks are given: its own view of the daemon."""

    name: str
    settings: dict[str, Any]  # its [plugins.<name>] table; path-like keys already resolved
    config_dir: Path | None  # the configuration file's directory; None without one
    state_dir: Path  # where the daemon may keep files (see state_directory)
    reactor: Any
    log: Any  # a twisted.logger.Logger in the namespace notifd.plugin.<name>


def state_directory(db: str | None) -> Path:
    """The daemon's own directory: systemd's StateDirectory, else the SQLite database's, else per user."""
    from .posting import sqlite_file

    given = os.environ.get("STATE_DIRECTORY")
    if given:
        return Path(given.split(":")[0])
    database = sqlite_file(db)
    if database is not None:
        return database.parent
    import platformdirs

    return platformdirs.user_data_path("notifd")


class Lifecycle:
    """Runs the plugins' startup hooks when the daemon starts and their shutdown hooks when it stops."""

    def __init__(
        self, pm: pluggy.PluginManager, settings: Mapping[str, Mapping], config_dir: str | None, state_dir: Path,
        reactor: Any,
    ) -> None:
        from twisted.logger import Logger

        self.pm = pm
        self.reactor = reactor
        self.startups = pm.hook.startup.get_hookimpls()  # in load order
        self.shutdowns = pm.hook.shutdown.get_hookimpls()
        if self.startups or self.shutdowns:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # before the reactor runs
        self.contexts = {
            impl.plugin_name: PluginContext(
                name=impl.plugin_name,
                settings=dict(settings.get(impl.plugin_name, {})),
                config_dir=Path(config_dir) if config_dir else None,
                state_dir=state_dir,
                reactor=reactor,
                log=Logger(namespace=f"notifd.plugin.{impl.plugin_name}"),
            )
            for impl in [*self.startups, *self.shutdowns]
        }
        self.began = False
        self.started: set[str] = set()

    def start(self):
        """Call each startup hook in turn; the Deferred fails with a PluginError naming the first that failed."""
        from twisted.internet import defer

        self.began = True

        @defer.inlineCallbacks
        def run():
            for impl in self.startups:
                error = yield self._call(impl, "startup", STARTUP_TIMEOUT)
                if error is not None:
                    raise PluginError(f"plugin {impl.plugin_name}: startup failed: {error}")
                self.started.add(impl.plugin_name)

        return run()

    def stop(self):
        """Call the shutdown hooks in reverse load order; fires once all are done, or SHUTDOWN_TIMEOUT later."""
        from twisted.internet import defer

        if not self.began:
            return defer.succeed(None)
        with_startup = {impl.plugin_name for impl in self.startups}
        due = [impl for impl in reversed(self.shutdowns)
               if impl.plugin_name in self.started or impl.plugin_name not in with_startup]
        return defer.gatherResults([self._call(impl, "shutdown", SHUTDOWN_TIMEOUT) for impl in due])

    def _call(self, impl, hook_name: str, timeout: float):
        context = self.contexts[impl.plugin_name]
        arguments = {"context": context} if "context" in impl.argnames else {}
        return call_plugin(
            impl.plugin_name, hook_name, lambda: impl.function(**arguments), timeout=timeout, clock=self.reactor
        )


# --- the door from the reactor -----------------------------------------------------------


def call_plugin(
    plugin_name: str, what: str, f: Callable[..., Any], *args: Any, timeout: float | None = None, clock: Any = None
):
    """Call plugin code from the reactor thread; returns a Deferred that never fails.

    It fires with None when `f` returned, or when the Deferred it returned fired, within
    `timeout` seconds of `clock`; otherwise with a one-line description of the error,
    which is already logged with the plugin's name and counted in `errors`.
    """
    from twisted.internet import defer
    from twisted.python.failure import Failure

    try:
        result = f(*args)
    except Exception:
        return defer.succeed(plugin_failed(plugin_name, what, Failure(), traceback=True))
    if not isinstance(result, defer.Deferred):
        return defer.succeed(None)
    if timeout is not None:
        result.addTimeout(timeout, clock)
    return result.addCallbacks(lambda _: None, lambda failure: plugin_failed(plugin_name, what, failure))


def plugin_failed(plugin_name: str, what: str, failure, traceback: bool = False) -> str:
    """Log and count a failure of plugin code; returns it in one line."""
    from twisted.internet.defer import TimeoutError
    from twisted.logger import Logger, LogLevel

    errors[plugin_name] += 1
    if failure.check(TimeoutError):
        error = f"timed out after {failure.value.args[0]} s"
    else:
        error = f"{failure.type.__name__}: {first_line(failure.value)}"
    log = Logger(namespace=f"notifd.plugin.{plugin_name}")
    if traceback:  # raised at once: a bug in the plugin, worth its traceback
        log.failure(
            "plugin {plugin} failed in {what}: {error}", failure, LogLevel.error, plugin=plugin_name, what=what,
            error=error,
        )
    else:  # a failed delivery (an HTTP error, a timeout): one line
        log.warn("plugin {plugin} failed in {what}: {error}", plugin=plugin_name, what=what, error=error)
    return error
