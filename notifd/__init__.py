"""notifd: a notification daemon speaking the line protocol of the Twisted notification tutorial.

This module is the plugin API: ``hookimpl`` and the types a plugin builds.
"""
import pluggy

from .config import ConfigError
from .items import InvalidItem, Item, ItemType, Notifier, Pick, Retry, Window

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("notifd")
"""Marks a plugin function as the implementation of a notifd hook."""

__all__ = [
    "hookimpl", "ConfigError", "InvalidItem", "Item", "ItemType", "Notifier", "Pick", "Retry", "Window", "__version__",
]
