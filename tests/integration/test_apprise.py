"""The built-in apprise notifier (extra `notifd[apprise]`): configuration, and a real
delivery through Apprise's json:// service to a local HTTP server, by a real notifd."""
from __future__ import annotations

import importlib.util
import sys
from datetime import datetime

import pytest

from notifd import Item
from notifd.default_plugins import apprise_notifier
from notifd.plugins import PluginError, get_plugin_manager, notifiers
from tests.integration.receiver import Receiver

pytestmark = pytest.mark.integration


def configured(settings):
    return notifiers(get_plugin_manager(entry_points=False), {"apprise": settings})


def test_without_settings_it_adds_nothing():
    assert [n.name for _, n in configured({})] == []


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)  # what `import apprise` meets when it is not installed
    with pytest.raises(PluginError, match=r"^plugin apprise: \[plugins.apprise\] the apprise package is not "
                                          r"installed: pip install 'notifd\[apprise\]'$"):
        configured({"urls": ["json://localhost/"]})


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"url": "json://localhost/"}, "unknown key 'url'"),
        ({"urls": []}, "urls: expected a list of Apprise URLs"),
        ({"urls": ["json://localhost/"], "types": "classified"}, "types: expected a list of item type names"),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(PluginError, match=rf"^plugin apprise: \[plugins.apprise\] {message}$"):
        configured(settings)


needs_apprise = pytest.mark.skipif(
    importlib.util.find_spec("apprise") is None, reason="apprise is not installed: pip install 'notifd[apprise]'"
)


@needs_apprise
def test_a_url_apprise_does_not_know_is_refused_without_echoing_it():
    with pytest.raises(PluginError, match=r"^plugin apprise: \[plugins.apprise\] urls\[1\]: not a URL Apprise knows$"):
        configured({"urls": ["json://localhost/", "nosuchservice://s3cret"]})


@needs_apprise
def test_send_posts_through_apprise():
    with Receiver() as receiver:
        url = receiver.url.replace("http://", "json://")
        sender = apprise_notifier.AppriseNotifier([url], "notifd: {type} #{id}", None, reactor=None)
        sender.send(Item(7, "classified", "Vélo à vendre", datetime(2026, 11, 26)))
        body = receiver.next().json
        assert (body["title"], body["message"]) == ("notifd: classified #7", "Vélo à vendre")
        receiver.status = 500
        with pytest.raises(RuntimeError, match="apprise could not notify every service"):
            sender.send(Item(8, "classified", "again", datetime(2026, 11, 26)))


@needs_apprise
def test_a_real_notifd_sends_new_items_through_apprise(daemon, notifctl, tmp_path):
    with Receiver() as receiver:
        config = tmp_path / "notifd.toml"
        config.write_text(
            f'[plugins.apprise]\nurls = ["{receiver.url.replace("http://", "json://")}"]\ntypes = ["classified"]\n'
        )
        daemon("--config", str(config))
        notifctl("--config", str(config), "add", "random", "42")  # not one of its types
        notifctl("--config", str(config), "add", "classified", "Nice appart in the 11e.")
        body = receiver.next().json
        assert (body["title"], body["message"]) == ("notifd: classified", "Nice appart in the 11e.")
