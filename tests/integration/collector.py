"""A durable notifier for tests: it appends each item id it is handed to a file."""
from __future__ import annotations

from pathlib import Path

PLUGIN = """
from notifd import Notifier, hookimpl


@hookimpl
def register_notifiers(register, settings):
    def notify(item):
        with open(settings["path"], "a") as f:
            f.write(f"{item.id}\\n")

    register(Notifier("collector", notify, durable=True))
"""


def collector_config(directory: Path) -> tuple[Path, Path]:
    """A config file loading the collector from a plugins directory; returns (config, the file of ids)."""
    (directory / "plugins").mkdir()
    (directory / "plugins" / "collector.py").write_text(PLUGIN)
    delivered = directory / "delivered.txt"
    config = directory / "notifd.toml"
    config.write_text(f'plugins_dirs = ["plugins"]\n\n[plugins.collector]\npath = "{delivered}"\n')
    return config, delivered


def delivered_ids(delivered: Path) -> list[int]:
    return sorted(map(int, delivered.read_text().split())) if delivered.exists() else []
