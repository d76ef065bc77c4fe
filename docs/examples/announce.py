"""Log every new item: the smallest notifier there is."""
from twisted.logger import Logger

from notifd import Notifier, hookimpl

log = Logger(namespace="notifd.plugin.announce")


def announce(item):
    log.info("new {type} item {id}: {text}", type=item.type, id=item.id, text=item.text)


@hookimpl
def register_notifiers(register):
    register(Notifier("announce", announce))
