"""The documentation says what the code does: hooks, the transcript, the README's commands."""
from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from notifd import Item, Retry, hookspecs
from notifd.config import build, read_file
from notifd.plugins import get_plugin_manager, notifiers
from notifd.protocol import Err
from tests import transcript

ROOT = Path(__file__).parent.parent
HOOKS = sorted(name for name, f in vars(hookspecs).items() if inspect.isfunction(f))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### {hook}({args})" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_tested(hook):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py")
    assert re.search(rf"def test_hook_{hook}\b", tests), f"no test_hook_{hook}"


def test_hookspecs_are_known_to_the_plugin_manager():
    pm = get_plugin_manager()
    assert sorted(name for name in vars(pm.hook) if not name.startswith("_")) == HOOKS


def test_the_transcript_in_protocol_md_is_the_one_the_tests_replay():
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    assert "```\n" + transcript.TUTORIAL.read_text() + "```" in protocol


def test_every_error_reply_is_documented():
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    for name, send in vars(Err).items():
        if not name.startswith("_"):
            assert f"`{send.data.decode().strip()}`" in protocol, name


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```sh\n{ci}\n```" in (ROOT / "README.md").read_text()


def test_the_example_config_is_valid_and_shows_every_key():
    from notifd.config import KEYS, NOTIFIER_KEYS, TYPE_KEYS, read_file

    example = ROOT / "contrib" / "notifd.toml"
    read_file(example)
    text = example.read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for path in list(KEYS) + [f"types.<name>.{key}" for key in TYPE_KEYS] + [
        f"notifiers.<name>.{key}" for key in NOTIFIER_KEYS
    ]:
        table, _, key = path.rpartition(".")
        assert re.search(rf"^#? ?{re.escape(key)} = ", text, re.MULTILINE), f"{path} not in contrib/notifd.toml"
        assert f"`{key}`" in operations or f"`{path}`" in operations or f".{key}`" in operations, path


def test_every_metric_is_in_the_operations_table_with_its_labels():
    from notifd.metrics import Metrics

    metrics = Metrics()
    labels = {c._name: set(c._labelnames) for c in metrics.registry._collector_to_names if hasattr(c, "_labelnames")}
    exported = {}
    for family in metrics.registry.collect():  # notifd's own, not the process_* ones
        if family.name.startswith("notifd_"):
            name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
            sampled = {key for sample in family.samples for key in sample.labels if key != "le"}
            exported[name] = labels.get(family.name, set()) | sampled | set(getattr(family, "_labelnames", ()))
    operations = (ROOT / "docs" / "operations.md").read_text()
    documented = {
        name: set(filter(None, (found or "").split(",")))
        for name, found in re.findall(r"^\| `(notifd_\w+)(?:\{([\w,]*)\})?` \|", operations, flags=re.M)
    }
    assert documented == exported


def _long_options(command) -> list[str]:
    import click

    return [o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--") and o != "--help"]


def test_the_readme_synopsis_shows_every_option():
    import click

    from notifd.cli import notifctl, notifd

    readme = (ROOT / "README.md").read_text()
    synopsis = re.search(r"^```\n(notifd \[.*?)^```$", readme, flags=re.S | re.M).group(1)
    assert [o for o in _long_options(notifd) if o not in synopsis] == []
    block = re.search(r"^```sh\n(notifctl \[.*?)^```$", readme, flags=re.S | re.M).group(1)
    # "notifctl db upgrade | db check [--json]  # ...": one segment per command (a | inside
    # brackets is a choice of options).
    segments = [part.strip().removeprefix("notifctl ") for line in block.splitlines()
                for part in re.split(r" \| (?![^\[]*\])", line.split("  #")[0])]

    def walk(command, path):
        shown = [seg for seg in segments if (seg.startswith("[") if not path else seg == path or seg.startswith(path + " "))]
        if not isinstance(command, click.Group) or command.invoke_without_command or not path:
            assert shown, f"notifctl {path} is not in the README"
            missing = [o for o in _long_options(command) if o not in " ".join(shown)]
            assert missing == [], f"notifctl {path}: {missing} not in the README"
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())

    walk(notifctl, "")


def test_the_systemd_unit_is_what_the_docs_promise():
    unit = (ROOT / "contrib" / "systemd" / "notifd.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=notifd", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit
    socket_unit = (ROOT / "contrib" / "systemd" / "notifd.socket").read_text()
    assert "FileDescriptorName=notifd" in socket_unit


# --- docs/plugins.md: every code block is a tested file or is run ------------------------

PLUGINS_MD = ROOT / "docs" / "plugins.md"
# Blocks that are whole files; each file is exercised by its own tests.
FILES_IN_PLUGINS_MD = [
    "plugins/weather/notifd_weather.py",  # plugins/weather/test_weather.py, and the tutorial test
    "plugins/weather/pyproject.toml",  # plugins/weather/test_weather.py (its entry point)
    "docs/examples/announce.py",  # below
    "docs/examples/webhook.toml",  # below
    "docs/examples/ticker.py",  # below
    "plugins/weather/test_weather_served.py",  # run with the example plugins' tests
]


def code_blocks(path: Path = PLUGINS_MD) -> list[tuple[str, str]]:
    """[(language, text)] of the fenced blocks of a markdown file."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", path.read_text(), flags=re.S | re.M)


def test_every_code_block_of_the_plugin_guide_is_tested():
    blocks = code_blocks()
    files = {(ROOT / name).read_text(): name for name in FILES_IN_PLUGINS_MD}
    shown = set()
    for language, text in blocks:
        if language in ("python", "toml") and text in files:
            shown.add(files[text])
        elif language == "python" and text.startswith("from notifd import ") and text.count("\n") == 1:
            exec(text, {})  # the plugin API's import line
        else:
            # The tutorial's console sessions and its protocol transcript are replayed
            # against a real notifd by tests/integration/test_docs_tutorial.py.
            assert language in ("console", "text"), f"untested {language} block:\n{text}"
    assert shown == set(FILES_IN_PLUGINS_MD)
    assert [language for language, _ in blocks if language in ("console", "text")] == ["console", "text", "console"]


@pytest.mark.parametrize("hook", HOOKS)
def test_the_hook_reference_is_the_docstring(hook):
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    section = PLUGINS_MD.read_text().split(f"### {hook}({args})\n\n", 1)[1].split("\n### ", 1)[0]
    assert section.strip() == inspect.getdoc(getattr(hookspecs, hook))


def test_the_announce_example_logs_each_item():
    spec = importlib.util.spec_from_file_location("announce", ROOT / "docs" / "examples" / "announce.py")
    announce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(announce)
    [(plugin, notifier)] = [found for found in notifiers(get_plugin_manager([announce])) if found[0] == "announce"]
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        notifier.notify(Item(3, "weather", "sunny", datetime(2026, 11, 26)))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [formatEvent(e) for e in events if e.get("log_namespace") == "notifd.plugin.announce"] == [
        "new weather item 3: sunny"
    ]


def test_the_webhook_config_example_configures_the_webhook(tmp_path):
    settings = read_file(ROOT / "docs" / "examples" / "webhook.toml")
    config = build({**settings, "plugins_dirs": [str(tmp_path)]})
    shutil.copy(ROOT / "plugins" / "webhook" / "notifd_webhook.py", tmp_path / "webhook.py")
    pm = get_plugin_manager(dirs=config.plugins_dirs, entry_points=False)
    config.check_plugins(pm.origins)
    [(plugin, webhook)] = notifiers(pm, config.plugins, reactor=None)
    webhook = config.notifier(webhook)
    assert (plugin, webhook.name, webhook.durable, webhook.timeout) == ("webhook", "webhook", True, 10.0)
    assert webhook.retry == Retry(max_attempts=8, first_delay=30.0, max_delay=3600.0)


def test_the_ticker_example_logs_while_the_daemon_runs(tmp_path):
    from twisted.internet import task

    from notifd.plugins import Lifecycle

    spec = importlib.util.spec_from_file_location("ticker", ROOT / "docs" / "examples" / "ticker.py")
    ticker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ticker)
    clock = task.Clock()
    life = Lifecycle(get_plugin_manager([ticker], entry_points=False), {"ticker": {"interval": 10}}, None,
                     tmp_path, clock)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        life.start()
        clock.pump([10, 10, 5])
        life.stop()
        clock.advance(100)
    finally:
        globalLogPublisher.removeObserver(events.append)
    shown = [formatEvent(e) for e in events if e.get("log_namespace") == "notifd.plugin.ticker"]
    assert shown == [f"still here (state in {tmp_path})"] * 3  # at 0, 10 and 20 s; none after the stop
