# `notifctl plugin new NAME`: a plugin package that installs and passes its tests as written.
#
# Rule: what is generated is a starting point a plugin author reads first, so it uses the
# public API only (`from notifd import ...`, `notifd.testing`), says why in comments, and its
# test runs a real daemon. tests/integration/test_scaffold.py installs each kind with pip and
# runs its tests.
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from string import Template

from . import __version__
from .items import TYPE_NAME

KINDS = ("type", "notifier")


class ScaffoldError(Exception):
    """The package cannot be written; the message says why."""


def names(name: str) -> dict[str, str]:
    """The names a plugin NAME gives: its module, its distribution and its test file."""
    if not TYPE_NAME.match(name):
        raise ScaffoldError(
            f"plugin name {name!r}: expected a lower-case letter, then letters, digits, '_' or '-' (at most 32)"
        )
    identifier = name.replace("-", "_")
    return {
        "name": name,
        "module": f"notifd_{identifier}",
        "distribution": f"notifd-{identifier.replace('_', '-')}",
        "test": f"test_{identifier}.py",
        "notifd_version": __version__,
        "python": shlex.quote(sys.executable),  # notifd's own environment
    }


def write(directory: Path, name: str, kind: str = "type") -> Path:
    """Write the package `notifd-NAME` in `directory`; returns its path. Refuses to overwrite anything."""
    if kind not in KINDS:
        raise ScaffoldError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    values = names(name)
    target = directory / values["distribution"]
    if target.exists():
        raise ScaffoldError(f"{target} exists already: choose another directory or name")
    files = {
        "pyproject.toml": PYPROJECT,
        f"{values['module']}.py": TYPE_MODULE if kind == "type" else NOTIFIER_MODULE,
        values["test"]: TYPE_TEST if kind == "type" else NOTIFIER_TEST,
        "README.md": README_TYPE if kind == "type" else README_NOTIFIER,
    }
    try:
        target.mkdir(parents=True)
        # notifd refuses plugin files that others may write: whatever the umask, 0755 and 0644.
        target.chmod(0o755)
        for file_name, template in files.items():
            path = target / file_name
            path.write_text(Template(template).substitute(values))
            path.chmod(0o644)
    except OSError as e:
        raise ScaffoldError(f"cannot write {target}: {e.strerror}") from e
    return target


def _dedent(text: str) -> str:
    return re.sub(r"^\n", "", text)


PYPROJECT = _dedent('''
[build-system]
requires = ["hatchling>=1.18"]
build-backend = "hatchling.build"

[project]
name = "${distribution}"
version = "0.1.0"
description = "The ${name} plugin for notifd."
requires-python = ">=3.11"
dependencies = ["notifd>=${notifd_version}"]

[project.optional-dependencies]
test = ["pytest>=7.4"]

# notifd finds the plugin through this entry point: its name is the plugin's name, the one
# of its [plugins.${name}] table in notifd's configuration.
[project.entry-points.notifd]
${name} = "${module}"

[tool.hatch.build.targets.wheel]
include = ["${module}.py"]
''')

TYPE_MODULE = _dedent('''
"""The `${name}` item type for notifd: `notifctl add ${name} TEXT` posts one, `${name}?` reads them in order."""
from notifd import InvalidItem, ItemType, Pick, hookimpl

MAX_CHARACTERS = 80


def validate(text: str) -> str:
    """What `notifctl add` stores for a posted text, or InvalidItem with a short reason."""
    text = " ".join(text.split())  # runs of spaces become one
    if len(text) > MAX_CHARACTERS:
        raise InvalidItem(f"at most {MAX_CHARACTERS} characters, got {len(text)}")
    return text


def render(item) -> str:
    """The one line a `${name}?` query answers; called in the daemon for each query: keep it quick."""
    return f"#{item.id} {item.text}"


@hookimpl
def register_item_types(register):
    # Pick.OLDEST: each query gets the next unread item, in order (Pick.NEWEST: the latest only).
    register(ItemType(name="${name}", validate=validate, render=render, pick=Pick.OLDEST))
''')

TYPE_TEST = _dedent('''
"""The ${name} item type: its validation, then the whole path through a real notifd (notifd.testing)."""
from pathlib import Path

import pytest

import ${module}
from notifd import InvalidItem


@pytest.fixture
def notifd_plugins():
    # This package, through its entry point (already installed, or declared from pyproject.toml).
    return [Path(__file__).parent]


def test_spaces_are_normalised():
    assert ${module}.validate("  hello   world ") == "hello world"


def test_a_long_text_is_refused():
    with pytest.raises(InvalidItem, match="at most 80 characters"):
        ${module}.validate("x" * 81)


def test_posted_announced_and_read_in_order(notifd_client, notifctl):
    notifd_client.notif("${name}")
    refused = notifctl("add", "${name}", "x" * 81, check=False)
    assert refused.returncode == 1 and refused.stderr == "notifctl: invalid ${name}: at most 80 characters, got 81\\n"
    first = notifctl("add", "${name}", "  hello   world ").stdout.strip()
    notifd_client.expect("notif: ${name}")
    second = notifctl("add", "${name}", "again").stdout.strip()
    notifd_client.stop_notif()
    assert notifd_client.ask("${name}?") == f"#{first} hello world"
    assert notifd_client.ask("${name}?") == f"#{second} again"
    assert notifd_client.ask("${name}?") == ""  # nothing unread
''')

NOTIFIER_MODULE = _dedent('''
"""The `${name}` notifier for notifd: appends every new item to a file, one JSON line each, at least once.

    [plugins.${name}]
    path = "${name}.jsonl"    # relative to the configuration file's directory
    types = ["classified"]    # optional; default: every type
"""
import json
import os

from notifd import ConfigError, Notifier, hookimpl

_KEYS = {"path", "types"}


def _check(settings: dict) -> tuple[str, frozenset[str] | None]:
    unknown = set(settings) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    path = settings.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError('path: expected a file name, like "${name}.jsonl"')
    types = settings.get("types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise ConfigError("types: expected a list of item type names")
    return path, None if types is None else frozenset(types)


def append(path: str, item) -> None:
    """Append one item to the file. It blocks: notifd must run it in a thread, never in its reactor."""
    line = json.dumps({"id": item.id, "type": item.type, "text": item.text}, ensure_ascii=False) + "\\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))  # one write: lines written by concurrent deliveries do not mix
    finally:
        os.close(fd)


@hookimpl
def register_notifiers(register, settings, reactor):
    if not settings:
        return  # not configured: nothing to do
    path, types = _check(settings)  # `path` is absolute already: notifd resolved it

    def notify(item):
        if types is not None and item.type not in types:
            return None  # a notifier sees items of every type; returning is delivering
        # Twisted is imported here, not at the top: `notifctl add` loads this plugin too.
        from twisted.internet import threads

        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), append, path, item)

    # durable: through notifd's outbox, retried after a failure, across restarts.
    register(Notifier("${name}", notify, durable=True))


@hookimpl
def startup(context):
    if context.settings:
        context.log.info("appending items to {path}", path=context.settings["path"])
''')

NOTIFIER_TEST = _dedent('''
"""The ${name} notifier against a real notifd (notifd.testing): what it writes, and a bad setting."""
import json
from pathlib import Path

import pytest

from notifd.testing import eventually


@pytest.fixture
def notifd_plugins():
    # This package, through its entry point (already installed, or declared from pyproject.toml).
    return [Path(__file__).parent]


@pytest.fixture
def notifd_config():
    # The configuration file is written in tmp_path: "items.jsonl" is tmp_path / "items.jsonl".
    return {"plugins": {"${name}": {"path": "items.jsonl", "types": ["classified"]}}}


def test_each_item_of_its_types_is_appended(notifd_daemon, notifctl, tmp_path):
    first = int(notifctl("add", "classified", "bike for sale").stdout)
    notifctl("add", "random", "7")  # not one of its types
    second = int(notifctl("add", "classified", "sofa").stdout)
    written = tmp_path / "items.jsonl"
    eventually(lambda: written.exists() and len(written.read_text().splitlines()) == 2)
    # Deliveries run concurrently: the lines may come in any order.
    records = sorted((json.loads(line) for line in written.read_text().splitlines()), key=lambda r: r["id"])
    assert records == [
        {"id": first, "type": "classified", "text": "bike for sale"},
        {"id": second, "type": "classified", "text": "sofa"},
    ]
    notifd_daemon.logged("appending items to ")


@pytest.mark.parametrize("notifd_config", [{"plugins": {"${name}": {"path": 42}}}])
def test_a_bad_setting_is_refused_naming_the_plugin_and_key(notifctl):
    result = notifctl("plugins", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        'notifctl: plugin ${name}: [plugins.${name}] path: expected a file name, like "${name}.jsonl"\\n'
    )
''')

_README_COMMON = '''
## Develop

Install it, editable, into the Python environment notifd runs in (notifd is not on PyPI:
a project named `notifd` there is another one), then run its tests:

    ${python} -m pip install -e '.[test]'
    ${python} -m pytest

The tests run a real notifd with the fixtures of `notifd.testing` (installed with notifd,
a pytest plugin): `notifd_daemon`, `notifd_client`, `notifctl`, and `notifd_config` /
`notifd_plugins` to override. See "Testing your plugin" in notifd's docs/plugins.md.

## Install

    ${python} -m pip install .

notifd and notifctl find the plugin through its entry point; `notifctl plugins` lists it.
'''

README_TYPE = _dedent('''
# ${distribution}

The `${name}` item type for notifd: `notifctl add ${name} "some text"` posts one, a client's
`${name}?` reads them in order, `notif ${name}` announces them.
''') + _README_COMMON

README_NOTIFIER = _dedent('''
# ${distribution}

The `${name}` notifier for notifd: every new item is appended to a file, one JSON line each,
at least once. Configure it in notifd's configuration file:

    [plugins.${name}]
    path = "${name}.jsonl"    # relative to the configuration file's directory
    types = ["classified"]    # optional; default: every type
''') + _README_COMMON
