"""The configuration file and the precedence flag > environment > file > default."""
from __future__ import annotations

import string
import tomllib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifd import ItemType, Notifier, Retry, Window
from notifd import db as dbmod
from notifd.config import (
    MASK,
    Config,
    ConfigError,
    build,
    masked,
    parse_duration,
    read_file,
    secret_key,
    to_toml,
)


def write(tmp_path, text):
    path = tmp_path / "notifd.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "value, expected",
    [(3600, timedelta(hours=1)), ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)),
     ("12h", timedelta(hours=12)), ("7d", timedelta(days=7)), ("2w", timedelta(weeks=2)), (0, None), ("0d", None)],
)
def test_durations(value, expected):
    assert parse_duration("k", value) == expected


@pytest.mark.parametrize("value", ["7 days", "-1d", -5, True, "d", [1]])
def test_bad_durations_name_the_key(value):
    with pytest.raises(ConfigError, match=r"^recent\.max_age: "):
        parse_duration("recent.max_age", value)


def test_a_full_file(tmp_path):
    path = write(
        tmp_path,
        """
db = "/var/lib/notifd/notifd.db"
listen = ["tcp:8789:interface=127.0.0.1", "tcp:9000"]
poll_interval = 0.5
node = "a"

[limits]
max_line_length = 2048

[recent]
max_age = "3d"

[types.classified]
recent_max_count = 10
""",
    )
    config = build(read_file(path))
    assert config.listen == ("tcp:8789:interface=127.0.0.1", "tcp:9000")
    assert config.max_line_length == 2048 and config.poll_interval == 0.5 and config.node == "a"
    classified = config.window(ItemType("classified", window=Window(max_age=timedelta(days=7), max_count=100)))
    assert classified == Window(max_age=timedelta(days=3), max_count=10)
    weather = config.window(ItemType("weather", window=Window(max_age=None, max_count=5)))
    assert weather == Window(max_age=timedelta(days=3), max_count=5)


def test_an_item_past_its_retention_is_not_recent(tmp_path):
    path = tmp_path / "notifd.toml"
    path.write_text('[recent]\nmax_age = 0\n[retention]\nmax_age = "2d"\n[types.weather]\nretention = "1h"\n')
    config = build(read_file(path))
    classified = ItemType("classified", window=Window(max_age=timedelta(days=7), max_count=100))
    assert config.window(classified) == Window(max_age=timedelta(days=2), max_count=100)
    weather = ItemType("weather", window=Window(max_age=None, max_count=5))
    assert config.window(weather) == Window(max_age=timedelta(hours=1), max_count=5)
    path.write_text('[retention]\nmax_age = 0\n')  # kept forever: the recent window alone
    assert build(read_file(path)).window(classified) == classified.window
    # Both set: the shorter wins, whichever it is.
    path.write_text('[recent]\nmax_age = "3d"\n[retention]\nmax_age = "2d"\n')
    assert build(read_file(path)).window(classified) == Window(max_age=timedelta(days=2), max_count=100)
    path.write_text('[recent]\nmax_age = "3d"\n[retention]\nmax_age = "10d"\n')
    assert build(read_file(path)).window(classified) == Window(max_age=timedelta(days=3), max_count=100)


@pytest.mark.parametrize(
    "text, message",
    [
        ("dbb = 'x'", "unknown key 'dbb'"),
        ("[recent]\nmax_agee = 3", "unknown key 'recent.max_agee'"),
        ("[types.classified]\ncount = 3", "unknown key 'types.classified.count'"),
        ("[log]\nformat = 'xml'", "log.format: expected one of text, json, got 'xml'"),
        ("[retention]\ninterval = 0", "retention.interval: must be more than 0"),
        ("[metrics]\nlisten = 'tcp:9100'", "metrics: expected a non-empty string, got {'listen': 'tcp:9100'}"),
        ("[limits]\nmax_line_length = 0", "limits.max_line_length: expected a whole number > 0, got 0"),
        ("[limits]\nmax_line_length = '4k'", "limits.max_line_length: expected a whole number > 0, got '4k'"),
        ("[auth]\nanonymous = 'no'", "auth.anonymous: expected true or false, got 'no'"),
        ("max_line_length = 10", "unknown key 'max_line_length'"),
        ("listen = []", "listen: expected a string or a list of strings, got []"),
        ("listen = [1]", "listen[0]: expected a non-empty string, got 1"),
        ("[recent]\nmax_count = -1", "recent.max_count: expected a whole number >= 0, got -1"),
        ("db = ", "Invalid value"),
        ("[limits]\nkeepalive = '10h'", "limits.keepalive: expected 1s to 32767s, or 0 for the system's default"),
        ("[limits]\nhello_timeout = -1", "limits.hello_timeout: must not be negative"),
        ("[http]\ncors_origins = ['*']", 'http.cors_origins[0]: "*" is not supported: list each origin'),
        ("[http]\ncors_origins = ['https://ok.example', 'shop.example']",
         "http.cors_origins[1]: expected an origin like \"https://shop.example\""),
        ("[http]\ncors_origins = ['https://shop.example/page']", "got 'https://shop.example/page'"),
        ("[http]\nhosts = ['https://notifd.example']", "http.hosts[0]: expected a host name like \"notifd.example.com\""),
        ("[http]\nhosts = ['notifd.example:8788']", "(no scheme, no port) or \"*\", got 'notifd.example:8788'"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_file(path)
    assert str(caught.value).startswith(f"config file {path}: ")
    assert message in str(caught.value)


def test_origins_are_kept_as_written(tmp_path):
    path = write(tmp_path, "[http]\ncors_origins = ['https://Shop.example:8443', 'http://127.0.0.1:8080/']")
    assert build(read_file(path)).cors_origins == ("https://Shop.example:8443", "http://127.0.0.1:8080/")


def test_settings_for_a_type_nobody_declares_are_refused():
    config = Config(types={"classifed": {"recent_max_count": 3}})
    with pytest.raises(ConfigError, match="types.classifed: no plugin declares an item type 'classifed'"):
        config.check_types({"classified": ItemType("classified")})


def test_precedence_flag_over_env_over_file(cli, tmp_path, monkeypatch):
    from_file, from_env, from_flag = (tmp_path / f"{name}.db" for name in ("file", "env", "flag"))
    for path in (from_file, from_env, from_flag):  # notifctl posts into a database, never creates one
        dbmod.open_engine(dbmod.database_url(str(path))).dispose()
    config = write(tmp_path, f'db = "{from_file}"\n')
    monkeypatch.setenv("NOTIFD_CONFIG", str(config))
    assert cli("add", "classified", "to file", db=False).code == 0
    monkeypatch.setenv("NOTIFD_DB", str(from_env))
    assert cli("add", "classified", "to env", db=False).code == 0
    assert cli("--db", str(from_flag), "add", "classified", "to flag", db=False).code == 0
    for path, text in ((from_file, "to file"), (from_env, "to env"), (from_flag, "to flag")):
        listed = cli("--db", str(path), "list", "--json", db=False).out
        assert f'"text": "{text}"' in listed and listed.count('"id"') == 1


# --- plugins and notifiers --------------------------------------------------------------


def test_plugin_settings_and_notifier_tables(tmp_path):
    path = write(
        tmp_path,
        """
plugins_dirs = ["plugins", "/opt/notifd/plugins"]

[plugins.webhook]
url = "https://example.com/hook"
anything = { the_plugin = "checks it" }

[notifiers.webhook]
timeout = "10s"
max_attempts = 5
first_delay = 2
max_delay = "1h"
""",
    )
    config = build(read_file(path))
    assert config.plugins_dirs == (str(tmp_path / "plugins"), "/opt/notifd/plugins")  # relative to the file
    assert config.plugins == {"webhook": {"url": "https://example.com/hook", "anything": {"the_plugin": "checks it"}}}
    tuned = config.notifier(Notifier("webhook", print, durable=True))
    assert tuned.timeout == 10.0
    assert tuned.retry == Retry(max_attempts=5, first_delay=2.0, max_delay=3600.0)
    assert config.notifier(Notifier("other", print)) == Notifier("other", print)
    config.check_plugins(["webhook"])
    with pytest.raises(ConfigError, match=r"^plugins.webhook: no plugin named 'webhook' is loaded \(loaded: classified\)$"):
        config.check_plugins(["classified"])
    with pytest.raises(ConfigError, match=r"^notifiers.webhook: no plugin declares a notifier 'webhook'$"):
        config.check_notifiers(["clients"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("plugins_dirs = 3", "plugins_dirs: expected a string or a list of strings, got 3"),
        ("plugins = 'webhook'", "plugins: expected a table of [plugins.<name>] tables"),
        ("[plugins]\nwebhook = 1", "plugins: expected a table of [plugins.<name>] tables"),
        ("[notifiers.webhook]\nretries = 3", "unknown key 'notifiers.webhook.retries'"),
        ("[notifiers.webhook]\ntimeout = 0", "notifiers.webhook.timeout: must be more than 0"),
        ("[notifiers.webhook]\nmax_attempts = 0", "notifiers.webhook.max_attempts: expected a whole number > 0, got 0"),
        ("[notifiers.webhook]\nfirst_delay = 'soon'", "notifiers.webhook.first_delay: expected a duration"),
    ],
)
def test_bad_plugin_and_notifier_settings_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        read_file(write(tmp_path, text))
    assert message in str(caught.value)


def test_a_retry_policy_that_makes_no_sense_names_the_notifier():
    config = Config(notifiers={"webhook": {"first_delay": 60.0, "max_delay": 10.0}})
    with pytest.raises(ConfigError, match=r"^notifiers.webhook: Retry needs "):
        config.notifier(Notifier("webhook", print))


# --- --check-config's output: valid TOML, every secret masked, at any depth --------------------


@pytest.mark.parametrize("key", [
    "token", "password", "passwd", "secret", "Authorization", "Proxy-Authorization", "api_key", "X-Api-Key",
    "APIKey", "apikey", "api_keys", "private_key", "smtp_pass", "client_secret", "accessToken", "refresh_token",
    "sslpassword", "db.password", "Cookie", "credentials",
])
def test_secret_looking_keys(key):
    assert secret_key(key)


@pytest.mark.parametrize("key", [
    "max_attempts", "first_delay", "monkey", "keyboard", "hotkeys", "passage", "bypass", "author", "keep_alive",
    "url", "urls", "types", "Accept", "Content-Type", "anonymous",
])
def test_keys_that_are_not_secret(key):
    assert not secret_key(key)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://notifd:hunter2@db.example/notifd", f"postgresql://notifd:{MASK}@db.example/notifd"),
    ("https://u:p:w/x@h.example/a", f"https://u:{MASK}@h.example/a"),  # the password runs to the first @
    ("https://h.example/hook?token=t0k&page=2", f"https://h.example/hook?token={MASK}&page=2"),
    ("https://h.example/a#access_token=t&state=s", f"https://h.example/a#access_token={MASK}&state=s"),
    ("https://h.example/a?x=1;apiKey=k", f"https://h.example/a?x=1;apiKey={MASK}"),
    ("https://user@h.example/@a?page=2", "https://user@h.example/@a?page=2"),
    ("tcp:8789:interface=127.0.0.1", "tcp:8789:interface=127.0.0.1"),
])
def test_passwords_and_secret_parameters_of_urls_are_masked(url, shown):
    assert masked({"url": url}) == {"url": shown}


MARK = "Qz9"  # in every secret the strategies make, and in nothing else
_secret_text = st.text(string.ascii_letters + string.digits + "-._~!$'()*+,%", max_size=8).map(MARK.__add__)
_plain_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10).filter(
    lambda text: MARK not in text and "://" not in text
)
_plain_keys = st.sampled_from(["url", "max_attempts", "monkey", "keyboard", "Content-Type", "with space", "a.b", "ünï", ""])
_secret_keys = st.sampled_from(["token", "password", "X-Api-Key", "Authorization", "client_secret", "accessToken", "db.pass"])
_host = st.sampled_from(["h.example", "h.example:8080", "[::1]"])


def _same(strategy):
    return strategy.map(lambda value: (value, value))


def _leaf(secret: bool):
    """(a value, how --check-config must show it)."""
    if secret:
        return st.one_of(
            _secret_text.map(lambda text: (text, MASK)),
            st.integers(-(2**63), 2**63 - 1).map(lambda n: (n, MASK)),
            _same(st.booleans()),  # true and false are never secret
        )
    return st.one_of(
        _same(_plain_text), _same(st.integers(-(2**63), 2**63 - 1)), _same(st.booleans()),
        st.tuples(st.sampled_from(["https", "postgresql+psycopg"]), _host, _secret_text).map(
            lambda t: (f"{t[0]}://user:{t[2]}@{t[1]}/x", f"{t[0]}://user:{MASK}@{t[1]}/x")
        ),
        st.tuples(_host, _secret_keys, _secret_text).map(
            lambda t: (f"https://{t[0]}/x?page=2&{t[1]}={t[2]}#top", f"https://{t[0]}/x?page=2&{t[1]}={MASK}#top")
        ),
        _same(st.tuples(_host, _plain_keys.filter(lambda key: key.isalpha())).map(lambda t: f"https://{t[0]}/x?{t[1]}=2")),
    )


@st.composite
def _table(draw, secret: bool = False, depth: int = 0):
    """(a table of settings, how --check-config must show it), secrets at any depth."""
    keys = draw(st.lists(st.one_of(_plain_keys.map(lambda k: (k, False)), _secret_keys.map(lambda k: (k, True))),
                         max_size=4, unique_by=lambda pair: pair[0]))
    given, shown = {}, {}
    for key, secret_here in keys:
        inside = secret or secret_here
        kind = draw(st.sampled_from(["leaf", "list", "table"] if depth < 3 else ["leaf", "list"]))
        if kind == "table":
            value = draw(_table(inside, depth + 1))
        elif kind == "list":
            items = draw(st.lists(_leaf(inside) if depth >= 2 else st.one_of(_leaf(inside), _table(inside, 3)),
                                  max_size=3))
            value = ([v for v, _ in items], [s for _, s in items])
        else:
            value = draw(_leaf(inside))
        given[key], shown[key] = value
    return given, shown


@settings(derandomize=True, max_examples=500, deadline=None)
@given(_table())
def test_to_toml_is_toml_with_every_secret_masked_at_any_depth(pair):
    given_settings, shown = pair
    out = to_toml({"plugins": {"webhook": given_settings}})
    assert MARK not in out
    assert tomllib.loads(out) == {"plugins": {"webhook": shown}}
    assert tomllib.loads(to_toml({"plugins": {"webhook": given_settings}}, mask=False)) == {
        "plugins": {"webhook": given_settings}
    }


def test_limits_for_connections_waiting_for_hello_and_keep_alives(tmp_path):
    assert (Config().max_unidentified_per_address, Config().hello_timeout, Config().keepalive) == (32, 10.0, 60.0)
    path = write(tmp_path, '[limits]\nmax_unidentified_per_address = 0\nhello_timeout = "30s"\nkeepalive = 0\n')
    config = build(read_file(path))
    assert (config.max_unidentified_per_address, config.hello_timeout, config.keepalive) == (None, 30.0, None)


@pytest.mark.parametrize(
    "given, used",
    [
        ("tcp:8789:interface=127.0.0.1", "tcp:8789:interface=127.0.0.1:backlog=1024"),
        (r"tcp6:8789:interface=\:\:1", r"tcp6:8789:interface=\:\:1:backlog=1024"),
        ("ssl:8790:privateKey=k.pem:certKey=c.pem", "ssl:8790:privateKey=k.pem:certKey=c.pem:backlog=1024"),
        ("tcp:8789:backlog=10", "tcp:8789:backlog=10"),  # an explicit backlog wins
        ("tcp:8789:127.0.0.1:10", "tcp:8789:127.0.0.1:10"),  # also given by position
        ("tcp6:8789:10", "tcp6:8789:10"),
        ("unix:/run/notifd.sock", "unix:/run/notifd.sock"),  # kinds without a backlog, or not ours
        ("systemd:domain=INET:name=notifd", "systemd:domain=INET:name=notifd"),
    ],
)
def test_listen_entries_get_a_larger_backlog_unless_they_set_one(given, used):
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from notifd.config import with_backlog

    assert with_backlog(given) == used
    if given.startswith("tcp"):  # what Twisted makes of it (ssl: would need the key files)
        endpoint = serverFromString(reactor, used)
        assert endpoint._backlog == (1024 if used != given else 10)


CLASSIFIED = ItemType("classified", window=Window(max_age=timedelta(days=7), max_count=100))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", Window(max_age=timedelta(days=7), max_count=100)),  # the plugin's default
        ('[recent]\nmax_age = "3d"\nmax_count = 20\n', Window(max_age=timedelta(days=3), max_count=20)),
        ("[recent]\nmax_count = 0\n", Window(max_age=timedelta(days=7), max_count=None)),  # 0: no limit
        ('[types.classified]\nrecent_max_age = "1h"\n', Window(max_age=timedelta(hours=1), max_count=100)),
        ("[types.classified]\nrecent_max_count = 5\n", Window(max_age=timedelta(days=7), max_count=5)),
        (
            '[recent]\nmax_age = "3d"\nmax_count = 20\n[types.classified]\nrecent_max_age = "1h"\nrecent_max_count = 5\n',
            Window(max_age=timedelta(hours=1), max_count=5),
        ),
        ('[recent]\nmax_age = "3d"\n[types.classified]\nrecent_max_count = 5\n', Window(max_age=timedelta(days=3), max_count=5)),
    ],
    ids=["default", "recent", "recent-no-limit", "type-age", "type-count", "type-over-recent", "each-key-apart"],
)
def test_a_type_window_is_its_own_setting_over_recent_over_the_plugin_default(tmp_path, text, expected):
    assert build(read_file(write(tmp_path, text))).window(CLASSIFIED) == expected


@pytest.mark.parametrize("text", ["[recent]\nmax_count = true\n", "[types.classified]\nrecent_max_count = false\n"])
def test_a_boolean_is_not_a_count(tmp_path, text):
    with pytest.raises(ConfigError, match="expected a whole number >= 0, got (True|False)"):
        build(read_file(write(tmp_path, text)))
