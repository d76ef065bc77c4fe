# The hook specifications: every hook a plugin may implement. Each docstring is the
# reference for its hook, and docs/plugins.md repeats it (tests/test_docs.py checks).
#
# Registration hooks run once, when notifd or notifctl starts; a plugin that raises there
# stops the start with a message naming the plugin. Life-cycle hooks (startup, shutdown) run
# in the daemon only. Hooks are called with keyword
# arguments only, so an implementation may take fewer arguments than its spec: declare
# only the ones you use.
import pluggy

hookspec = pluggy.HookspecMarker("notifd")


@hookspec
def register_item_types(register, settings):
    """Declare item types: call ``register(ItemType(...))`` once per type.

    Called once at start by both ``notifd`` and ``notifctl`` (so ``notifctl add`` validates
    with the plugin's own code). A type name may be registered by one plugin only.
    ``settings`` is this plugin's ``[plugins.<name>]`` table from the configuration file
    (a dict, empty when there is none); raise ``ConfigError("key: what is wrong")`` for a
    bad setting.
    """


@hookspec
def register_notifiers(register, settings, reactor):
    """Declare notifiers: call ``register(Notifier(name, notify))`` once per notifier.

    Called once when ``notifd`` starts, and by ``notifctl plugins`` to list them: build
    objects here, start nothing. ``settings`` is as for ``register_item_types``;
    ``reactor`` is the Twisted reactor that ``notify`` will run in (for an HTTP ``Agent``,
    ``callLater``, a thread pool, a process).

    ``notify(item)`` is then called in the reactor thread once per new item, after the
    item is committed. It must not block: return a Deferred for slow work, or run
    blocking code in a thread. An exception, a failed Deferred or a Deferred slower than
    ``Notifier.timeout`` is logged with the plugin's name, counted, and does not stop
    other notifiers; clients are never kept waiting for a notifier. A notifier declared
    with ``durable=True`` is delivered through the outbox in the database: at least once,
    retried with back-off after a failure, across restarts. Pushing ``notif: <type>`` to
    clients in notification mode is itself a (live) notifier.
    """


@hookspec
def startup(context):
    """Start what the plugin runs beside the daemon (a connection, a timer, a server).

    Called once by ``notifd`` only (never by ``notifctl``), plugin by plugin in load
    order, after the database is open and before notifd listens. ``context`` is this
    plugin's own: ``name``, ``settings`` (as for ``register_item_types``), ``config_dir``
    (the configuration file's directory, or None without one), ``state_dir`` (a directory
    the daemon may write to), ``reactor`` and ``log`` (a Twisted ``Logger`` named after the
    plugin). It may return a Deferred: notifd waits for it, at most 30 seconds. An
    exception, a failed Deferred or a timeout stops the start with one line naming the
    plugin (plugins already started are shut down).
    """


@hookspec
def shutdown(context):
    """Stop what ``startup`` started: called once when ``notifd`` stops.

    Called after clients are disconnected and notifiers are no longer called, in reverse
    load order, for each plugin whose ``startup`` succeeded (or that has none), with the
    same ``context``. It may return a Deferred: notifd waits for all of them together, at
    most 10 seconds, then cancels those still running. An exception, a failed Deferred or
    a timeout is logged with the plugin's name, and the stop goes on.
    """


NAMES = frozenset(name for name, value in dict(globals()).items() if hasattr(value, "notifd_spec"))
"""The name of every hook."""
