# The hook specifications: every hook a plugin may implement. Each docstring is the
# reference for its hook, and docs/plugins.md repeats it (tests/test_docs.py checks).
#
# Registration hooks run once, when notifd or notifctl starts; a plugin that raises there
# stops the start with a message naming the plugin. Hooks are called with keyword
# arguments only, so an implementation may take fewer arguments than its spec.
import pluggy

hookspec = pluggy.HookspecMarker("notifd")


@hookspec
def register_item_types(register):
    """Declare item types: call ``register(ItemType(...))`` once per type.

    Called once at start by both ``notifd`` and ``notifctl`` (so ``notifctl add`` validates
    with the plugin's own code). A type name may be registered by one plugin only.
    """


@hookspec
def register_notifiers(register):
    """Declare notifiers: call ``register(Notifier(name, notify))`` once per notifier.

    Called once when ``notifd`` starts (not by ``notifctl``). ``notify(item)`` is then
    called in the reactor thread once per new item, after the item is committed. It must
    not block: return a Deferred for slow work. An exception or a failed Deferred is
    logged with the plugin's name and does not stop other notifiers. Pushing
    ``notif: <type>`` to clients in notification mode is itself such a notifier.
    """
