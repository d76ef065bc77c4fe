"""The `apprise` notifier: every new item to any service Apprise knows, from one setting.

Needs the extra: ``pip install 'notifd[apprise]'``. Does nothing unless configured:

    [plugins.apprise]
    urls = ["mailto://user:pass@example.com", "tgram://bottoken/ChatID"]
    title = "notifd: {type}"      # optional; {type} and {id} are replaced
    types = ["classified"]        # optional; default: every type

Apprise's `notify()` blocks (it talks to the services itself), so it runs in the reactor's
thread pool, never in the reactor thread nor on the database thread. The notifier is
durable: a service that fails is retried from the outbox.
"""
from notifd import ConfigError, Notifier, hookimpl

_KEYS = {"urls", "title", "types"}


class AppriseNotifier:
    def __init__(self, urls: list[str], title: str, types: frozenset[str] | None, reactor) -> None:
        self.urls = urls
        self.title = title
        self.types = types
        self.reactor = reactor

    def notify(self, item):
        if self.types is not None and item.type not in self.types:
            return None
        from twisted.internet import threads

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.send, item)

    def send(self, item) -> None:
        """Send one item to every URL, blocking: call it in a thread."""
        import apprise

        # One Apprise object per call: deliveries run in several threads at once.
        sender = apprise.Apprise()
        for url in self.urls:
            sender.add(url)
        title = self.title.format(type=item.type, id=item.id)
        if not sender.notify(body=item.text, title=title):
            raise RuntimeError("apprise could not notify every service")


def _settings(settings: dict) -> tuple[list[str], str, frozenset[str] | None]:
    unknown = set(settings) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    urls = settings.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ConfigError("urls: expected a list of Apprise URLs")
    title = settings.get("title", "notifd: {type}")
    if not isinstance(title, str):
        raise ConfigError("title: expected a string")
    types = settings.get("types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise ConfigError("types: expected a list of item type names")
    return urls, title, None if types is None else frozenset(types)


@hookimpl
def register_notifiers(register, settings, reactor):
    if not settings:
        return
    urls, title, types = _settings(settings)
    try:
        import apprise
    except ImportError:
        raise ConfigError("the apprise package is not installed: pip install 'notifd[apprise]'") from None
    for index, url in enumerate(urls):
        if not apprise.Apprise().add(url):
            # The URL holds credentials: name its position, not its text.
            raise ConfigError(f"urls[{index}]: not a URL Apprise knows")
    register(Notifier("apprise", AppriseNotifier(urls, title, types, reactor).notify, durable=True))
