"""notifctl through its real entry point, in-process: exit codes, stdout, one-line errors."""
from __future__ import annotations

import json
import sys
import shutil
from pathlib import Path

import pytest

from notifd import db as dbmod
from notifd import store
from tests.posts import add_item
from tests.require import require_root


def items(cli):
    return json.loads(cli("list", "--json").out)


def test_add_prints_the_id_and_list_shows_it(cli):
    first = cli("add", "classified", "Nice appart in the 11e.")
    assert first.code == 0 and first.out == "1\n"
    assert cli("add", "random", "89765234756").out == "2\n"
    listed = items(cli)
    assert [(i["id"], i["type"], i["text"]) for i in listed] == [
        (2, "random", "89765234756"),
        (1, "classified", "Nice appart in the 11e."),
    ]
    assert listed[0]["created_at"].endswith("Z")
    assert cli("list", "--type", "random", "--json").out.count('"id"') == 1


def test_text_from_stdin(cli):
    assert cli("add", "classified", stdin="Vélo à vendre\n".encode()).code == 0
    assert items(cli)[0]["text"] == "Vélo à vendre"


def test_random_without_a_value_draws_one(cli):
    result = cli("add", "random")
    assert result.code == 0
    assert items(cli)[0]["text"].isdigit()


def test_random_values_are_normalised(cli):
    cli("add", "random", "+007")
    assert items(cli)[0]["text"] == "7"


BAD_INPUT = [
    (("add", "weather", "sunny"), b"", "unknown item type 'weather' (known: classified, random)"),
    (("add", "classified", ""), b"", "invalid classified: empty text"),
    (("add", "classified"), b"", "invalid classified: empty text"),
    (("add", "classified", "two\nlines"), b"", "invalid classified: text contains a newline"),
    (("add", "classified", "bell\x07"), b"", "invalid classified: text contains a control character (U+0007)"),
    (("add", "classified", "tab\there"), b"", "invalid classified: text contains a control character (U+0009)"),
    (("add", "classified", "sep\u2028"), b"", "invalid classified: text contains a control character (U+2028)"),
    (("add", "classified"), b"two\nlines\n", "invalid classified: text contains a newline"),
    (("add", "classified"), b"\xff\xfe", "text is not valid UTF-8"),
    (("add", "random", "12.5"), b"", "invalid random: random value must be a decimal integer"),
    (("add", "random", "1_000"), b"", "invalid random: random value must be a decimal integer"),
    (("add", "random", "twelve"), b"", "invalid random: random value must be a decimal integer"),
    (("add", "classified", "x" * 4097), b"", "invalid classified: text is 4097 bytes, over the line limit of 4096"),
    (("add", "classified"), b"x" * 100_000, "invalid classified: text is over the line limit of 4096 bytes"),
    (("add", "--id", " ", "classified", "x"), b"", "--id must not be empty"),
    (("add", "--id", "a\tb", "classified", "x"), b"", "--id contains a control character (U+0009)"),
    (("add", "classified", " \t "), b"", "invalid classified: empty text"),
    (("add", "classified", "abc\u202egnp.exe"), b"",
     "invalid classified: text contains an invisible formatting character (U+202E)"),
    (("add", "classified", "\ufeffad"), b"", "invalid classified: text contains an invisible formatting character (U+FEFF)"),
    (("add",), b"", "Missing argument 'TYPE'."),
    (("nosuchcommand",), b"", "No such command 'nosuchcommand'."),
]


@pytest.mark.parametrize("args, stdin, message", BAD_INPUT)
def test_bad_input_exits_non_zero_with_one_line_and_stores_nothing(cli, args, stdin, message):
    result = cli(*args, stdin=stdin)
    assert result.code != 0
    assert result.err == f"notifctl: {message}\n"
    assert result.out == ""
    assert items(cli) == []


def test_line_limit_comes_from_the_config(cli, tmp_path, monkeypatch):
    config = tmp_path / "notifd.toml"
    config.write_text("[limits]\nmax_line_length = 10\n")
    monkeypatch.setenv("NOTIFD_CONFIG", str(config))
    assert cli("add", "classified", "0123456789").code == 0
    result = cli("add", "classified", "0123456789a")
    assert result.err == "notifctl: invalid classified: text is 11 bytes, over the line limit of 10\n"


def test_idempotent_add(cli):
    first = cli("add", "--id", "post-42", "classified", "ad")
    again = cli("add", "--id", "post-42", "classified", "ad")
    assert first.code == again.code == 0 and first.out == again.out == "1\n"
    conflict = cli("add", "--id", "post-42", "classified", "another ad")
    assert conflict.code == 1
    assert conflict.err == "notifctl: --id post-42: key already used by item 1 with another type or text\n"
    cli("add", "--id", "post-43", "classified", "1")
    other_type = cli("add", "--id", "post-43", "random", "1")
    assert (other_type.code, other_type.err) == (  # the same text under another type
        1, "notifctl: --id post-43: key already used by item 2 with another type or text\n"
    )
    assert len(items(cli)) == 2


def test_idempotent_add_of_a_drawn_value(cli):
    # `random` with no text draws its value: the retry draws another, and finds the first item.
    first = cli("add", "--id", "draw-1", "random")
    again = cli("add", "--id", "draw-1", "random")
    assert first.code == again.code == 0 and first.out == again.out == "1\n"
    assert len(items(cli)) == 1
    given = cli("add", "--id", "draw-1", "random", "7")  # a value of one's own is another text
    assert given.err == "notifctl: --id draw-1: key already used by item 1 with another type or text\n"
    assert cli("add", "--id", "draw-1", "classified").code == 1  # another type


def test_named_clients(cli):
    created = cli("client", "add", "kiosk")
    assert created.code == 0
    token = created.lines[-1]
    assert len(token) >= 43 and " " not in token
    assert cli("client", "add", "kiosk").err == "notifctl: client 'kiosk' already exists\n"
    assert cli("client", "add", "bad name").code == 1
    cli("add", "classified", "a")
    cli("add", "classified", "b")
    listed = json.loads(cli("clients", "--json").out)
    assert listed == [
        {"name": "kiosk", "unread": {"classified": 2, "random": 0}, "last_seen": None, "connections": 0}
    ]
    assert "classified=2 random=0" in cli("clients").out
    assert [(c["name"], c["last_seen"]) for c in json.loads(cli("client", "list", "--json").out)] == [("kiosk", None)]
    cli("token", "add", "shop", "--publish", "classified")
    assert [(t["name"], t["last_used"]) for t in json.loads(cli("token", "list", "--json").out)] == [("shop", None)]
    assert cli("client", "remove", "kiosk").code == 0
    assert cli("client", "remove", "kiosk").err == "notifctl: no client named 'kiosk'\n"


def test_clients_counts_only_the_types_a_client_may_read(cli):
    cli("client", "add", "reader", "--types", "classified")
    cli("client", "add", "all")
    cli("add", "classified", "a")
    cli("add", "random", "13")
    listed = {c["name"]: c["unread"] for c in json.loads(cli("clients", "--json").out)}
    assert listed == {"reader": {"classified": 1}, "all": {"classified": 1, "random": 1}}
    lines = {line.split("\t")[0]: line.split("\t")[1] for line in cli("clients").lines}
    assert lines == {"reader": "classified=1", "all": "classified=1 random=1"}


def test_db_upgrade(cli, db_path):
    assert cli("db", "upgrade", create=False).out == "created the database at the current schema\n"
    assert cli("db", "upgrade").out == "the schema is up to date\n"
    assert db_path.stat().st_mode & 0o777 == 0o600


def test_a_database_newer_than_notifd_is_refused(cli, engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    result = cli("add", "classified", "ad")
    assert result.code == 1
    assert result.err.startswith("notifctl: the database schema is at revision 9999, newer than this notifd")
    assert result.err.count("\n") == 1


def test_db_check_of_a_newer_schema_advises_upgrading_notifd(cli, engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    result = cli("db", "check")
    assert result.code == 1
    assert result.err == (
        f"notifctl: schema is at 9999, newer than this notifd, which expects {store.SCHEMA_HEAD} (upgrade notifd)\n"
    )
    assert "newer than this notifd" in cli("db", "upgrade").err  # it would refuse what db check once advised


def test_db_check_of_an_older_schema_advises_db_upgrade(cli, engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    result = cli("db", "check")
    assert result.code == 1
    assert result.err == f"notifctl: schema is at 0001, this notifd expects {store.SCHEMA_HEAD} (notifctl db upgrade)\n"


def test_config_errors_name_the_key(cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('db = "x.db"\nlisten_on = "tcp:1"\n')
    result = cli("--config", str(config), "list", db=False)
    assert result.code == 1
    assert result.err == f"notifctl: config file {config}: unknown key 'listen_on'\n"


def test_unwritable_database_is_one_clear_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFD_DB", str(tmp_path / "missing-dir" / "sub" / "x.db"))
    (tmp_path / "missing-dir").write_text("a file where a directory should be")
    result = cli("add", "classified", "ad", db=False)
    assert result.code == 1 and result.err.count("\n") == 1 and result.err.startswith("notifctl: ")


def test_help_exits_zero(cli):
    result = cli("--help")
    assert result.code == 0 and "add" in result.out


def test_rotating_a_token(cli, database):
    old = cli("client", "add", "kiosk").lines[-1]
    rotated = cli("client", "rotate", "kiosk")
    assert rotated.code == 0
    new = rotated.lines[-1]
    assert new != old and len(new) >= 43
    from notifd import store

    assert database.call(store.identify, "kiosk", old) is None
    assert database.call(store.identify, "kiosk", new) is not None
    assert cli("client", "rotate", "nobody").err == "notifctl: no client named 'nobody'\n"


HOSTILE = [
    (("add", "../../etc/passwd", "x"), b"", "unknown item type '../../etc/passwd' (known: classified, random)"),
    (("add", "classified/../random", "x"), b"", "unknown item type 'classified/../random' (known: classified, random)"),
    (("add", "classified", "\x1b[2J\x1b[31mred"), b"", "invalid classified: text contains a control character (U+001B)"),
    (("add", "classified", "nul\x00byte"), b"", "invalid classified: text contains a control character (U+0000)"),
    (("add", "classified"), bytes(range(256)), "text is not valid UTF-8"),
    (("add", "classified"), b"\x00" * 10, "invalid classified: text contains a control character (U+0000)"),
    (("add", "classified", "y" * 1_000_000), b"", "invalid classified: text is 1000000 bytes, over the line limit of 4096"),
    (("add", "classified"), "é".encode() * 3000, "invalid classified: text is over the line limit of 4096 bytes"),
    (("add", "classified"), "é".encode() * 2048 + b"\n", None),  # exactly at the limit: accepted
    (("client", "add", "../evil"), b"", "client name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
    (("client", "add", "x" * 65), b"", "client name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
]


@pytest.mark.parametrize("args, stdin, message", HOSTILE)
def test_hostile_arguments_fail_cleanly(cli, args, stdin, message):
    result = cli(*args, stdin=stdin)
    if message is None:
        assert result.code == 0 and len(items(cli)) == 1
        return
    assert (result.code, result.err, result.out) == (1, f"notifctl: {message}\n", "")
    assert items(cli) == []


# --- plugins and the outbox ----------------------------------------------------------

ROOT = Path(__file__).parent.parent.parent
WEATHER_PLUGIN = ROOT / "plugins" / "weather" / "notifd_weather.py"


@pytest.fixture
def plugins_dir(tmp_path):
    """A plugins directory holding the weather example, as the tutorial installs it."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    shutil.copy(WEATHER_PLUGIN, directory / "weather.py")
    return directory


def test_add_validates_with_the_plugin_from_a_plugins_dir(cli, plugins_dir):
    assert cli("--plugins-dir", str(plugins_dir), "add", "weather", "Light rain, 54 F").out == "1\n"
    assert items(cli)[0]["text"] == "light rain, 12°C"
    refused = cli("--plugins-dir", str(plugins_dir), "add", "weather", "tornado")
    assert refused.code == 1 and refused.err.startswith("notifctl: invalid weather: unknown condition 'tornado'; known: ")
    assert refused.err.count("\n") == 1
    # Without the plugin, notifctl does not know the type.
    assert cli("add", "weather", "sunny").err.startswith("notifctl: unknown item type 'weather'")


def test_plugins_dirs_from_the_environment_and_the_config_file(cli, plugins_dir, tmp_path, monkeypatch):
    other = tmp_path / "more"
    other.mkdir()
    (other / "jobs.py").write_text(WEATHER_PLUGIN.read_text().replace('name="weather"', 'name="jobs"'))
    monkeypatch.setenv("NOTIFD_PLUGINS_DIR", f"{plugins_dir}:{other}")
    assert cli("add", "jobs", "sunny").code == 0
    monkeypatch.delenv("NOTIFD_PLUGINS_DIR")
    config = tmp_path / "notifd.toml"
    config.write_text('plugins_dirs = ["plugins"]\n')  # relative to the file
    assert cli("--config", str(config), "add", "weather", "sunny").code == 0
    assert cli("--config", str(config), "add", "jobs", "sunny").err.startswith("notifctl: unknown item type")


def test_a_plugin_that_cannot_load_stops_notifctl_with_one_line(cli, plugins_dir):
    (plugins_dir / "weather.py").write_text("from notifd import hookimpl\nimport weather_station_driver\n")
    result = cli("--plugins-dir", str(plugins_dir), "add", "classified", "ad")
    assert result.code == 1
    assert result.err == (
        f"notifctl: plugin weather ({plugins_dir / 'weather.py'}): cannot import: "
        "ModuleNotFoundError: No module named 'weather_station_driver'\n"
    )
    assert items(cli) == []


def test_validation_that_raises_unexpectedly_is_one_clear_line(cli, plugins_dir):
    source = (plugins_dir / "weather.py").read_text()
    (plugins_dir / "weather.py").write_text(source.replace("    celsius = float(", "    1 / 0\n    celsius = float("))
    result = cli("--plugins-dir", str(plugins_dir), "add", "weather", "rain 12C")
    assert result.code == 1
    assert result.err == "notifctl: the weather plugin failed to validate the text: ZeroDivisionError: division by zero\n"
    assert items(cli) == []


def test_plugins_lists_what_each_plugin_adds(cli, plugins_dir):
    listed = json.loads(cli("--plugins-dir", str(plugins_dir), "plugins", "--json").out)
    assert listed[-1] == {
        "name": "weather", "origin": str(plugins_dir / "weather.py"), "item_types": ["weather"], "notifiers": []
    }
    assert [p["name"] for p in listed] == ["classified", "random", "apprise", "weather"]
    text = cli("--plugins-dir", str(plugins_dir), "plugins").out
    assert f"weather\t{plugins_dir / 'weather.py'}\ttype weather\n" in text


def test_settings_for_a_plugin_that_is_not_loaded_are_refused(cli, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text('[plugins.webhok]\nurl = "http://example.com/"\n')
    result = cli("--config", str(config), "add", "classified", "ad")
    prefix = "notifctl: plugins.webhok: no plugin named 'webhok' is loaded (loaded: "
    assert result.err.startswith(prefix) and result.err.endswith(")\n")
    names = result.err.removeprefix(prefix).removesuffix(")\n").split(", ")
    assert names == sorted(names) and {"classified", "random"} <= set(names)  # what to write instead


def test_outbox_lists_deliveries_and_retry_requeues_one(cli, database):
    item_id, _ = database.call(add_item, "classified", "ad")
    database.call(store.enqueue_new_items, ["webhook"], now=store.utcnow())  # the mark starts here
    item_id, _ = database.call(add_item, "classified", "undeliverable")
    database.call(store.enqueue_new_items, ["webhook"], now=store.utcnow())
    [pending] = database.call(store.list_outbox)
    database.call(store.delivery_failed, pending.id, "HTTP 500 Internal Server Error", None)

    [row] = json.loads(cli("outbox", "--json").out)
    assert {k: row[k] for k in ("id", "state", "notifier", "item_id", "type", "attempts", "last_error")} == {
        "id": pending.id, "state": "dead", "notifier": "webhook", "item_id": item_id, "type": "classified",
        "attempts": 0, "last_error": "HTTP 500 Internal Server Error",
    }
    assert cli("outbox").out.startswith(f"{pending.id}\tdead\twebhook\titem {item_id} (classified)\t")
    assert cli("outbox", "retry", str(pending.id)).out == f"re-queued delivery {pending.id}\n"
    assert json.loads(cli("outbox", "--json").out)[0]["state"] == "pending"
    missing = cli("outbox", "retry", "999")
    assert (missing.code, missing.err) == (1, "notifctl: no outbox entry 999\n")


# --- notifctl add --batch -------------------------------------------------------------------


def test_batch_from_a_file_one_transaction_ids_in_order(cli, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_bytes("classified Nice appart in the 11e.\r\nrandom 42\nrandom\nclassified Vélo à vendre\n".encode())
    result = cli("add", "--batch", str(batch))
    assert result.code == 0 and result.lines == ["1", "2", "3", "4"]
    listed = items(cli)
    assert [(i["type"], i["text"]) for i in reversed(listed)][:2] == [("classified", "Nice appart in the 11e."), ("random", "42")]
    assert listed[1]["text"].isdigit()  # `random` alone draws a value, as `add random` does
    assert listed[0]["text"] == "Vélo à vendre"


def test_batch_of_one_type_from_stdin(cli):
    result = cli("add", "classified", "--batch", "-", stdin=b"first ad\nsecond ad")
    assert result.code == 0 and result.lines == ["1", "2"]
    assert [i["text"] for i in items(cli)] == ["second ad", "first ad"]


BAD_BATCHES = [
    ((), b"classified ok\nclassified bell\x07\n", "line 2: invalid classified: text contains a control character (U+0007)"),
    ((), b"classified ok\nweather sunny\n", "line 2: unknown item type 'weather' (known: classified, random)"),
    ((), b"classified ok\n\n", "line 2: expected 'TYPE TEXT'"),
    ((), b"random 1\nrandom x\n", "line 2: invalid random: random value must be a decimal integer"),
    ((), b"classified ok\nclassified \xff\n", "line 2: text is not valid UTF-8"),
    ((), b"classified\n", "line 1: invalid classified: empty text"),
    ((), b"", "the batch is empty"),
    (("classified",), b"ok\n" + b"x" * 5000 + b"\n", "line 2: invalid classified: text is 5000 bytes, over the line limit of 4096"),
    (("--id", "k"), b"classified ok\n", "--batch takes no TEXT and no --id"),
]


@pytest.mark.parametrize("args, stdin, message", BAD_BATCHES)
def test_a_bad_batch_names_its_line_and_stores_nothing(cli, args, stdin, message):
    result = cli("add", *args, "--batch", "-", stdin=stdin)
    assert result.code != 0
    assert result.err == f"notifctl: {message}\n"
    assert result.out == ""
    assert items(cli) == []


def test_a_missing_batch_file_is_one_line(cli, tmp_path):
    result = cli("add", "--batch", str(tmp_path / "nope.txt"))
    assert result.code == 1 and result.err == f"notifctl: cannot read {tmp_path / 'nope.txt'}: No such file or directory\n"


def test_an_older_schema_is_upgraded_only_when_asked(cli, db_path):
    # An upgrade is an operator's decision (other nodes may still run the older notifd),
    # not a side effect of `notifctl add` or `notifctl status`.
    from alembic import command

    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    config = dbmod._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    engine.dispose()
    expected = (f"notifctl: the database schema is at revision 0003, older than this notifd's {store.SCHEMA_HEAD}: "
                "upgrade it with `notifctl db upgrade` (notifd also does when it starts), then run this again\n")
    for argv in (["add", "classified", "--batch", "-"], ["status"], ["list"]):
        refused = cli(*argv, stdin=b"a\nb\n")
        assert (refused.code, refused.err) == (1, expected), argv
    assert "0003" in cli("db", "check").err  # still there: nothing upgraded it
    assert cli("db", "upgrade").code == 0
    assert cli("add", "classified", "--batch", "-", stdin=b"a\nb\n").lines == ["1", "2"]
    assert len(items(cli)) == 2


# --- notifctl rm ---------------------------------------------------------------------------------


def test_rm_deletes_items_and_their_deliveries_and_leaves_cursors(cli, database):
    database.call(store.add_marks, ["webhook"])
    ids = [int(cli("add", "classified", text).out) for text in ("keep", "drop", "drop too")]
    database.call(store.enqueue_new_items, ["webhook"], now=store.utcnow())
    cli("client", "add", "kiosk")
    [client] = database.call(store.list_clients)
    database.call(store.mark_read, [(client.id, "classified", ids[2])])

    removed = cli("rm", str(ids[2]), str(ids[1]), "--json")
    assert removed.code == 0
    assert [(r["id"], r["text"]) for r in json.loads(removed.out)] == [(ids[1], "drop"), (ids[2], "drop too")]
    assert [i["text"] for i in items(cli)] == ["keep"]
    assert [d.item.id for d in database.call(store.list_outbox)] == [ids[0]]
    assert database.call(store.client_cursors, client.id) == {"classified": ids[2]}  # not moved back
    assert cli("rm", str(ids[0])).out == f"removed {ids[0]}\tclassified\tkeep\n"


def test_rm_of_an_unknown_id_removes_nothing(cli):
    cli("add", "classified", "kept")
    result = cli("rm", "1", "7", "9")
    assert (result.code, result.out, result.err) == (1, "", "notifctl: no item 7, 9; nothing removed\n")
    assert [i["text"] for i in items(cli)] == ["kept"]
    assert cli("rm").code == 2  # usage: at least one ID
    assert cli("rm", "abc").code == 2


def test_list_of_an_unknown_type_is_the_same_error_as_add(cli):
    cli("add", "classified", "kept")
    for args in (("add", "nosuch", "x"), ("list", "--type", "nosuch")):
        result = cli(*args)
        assert (result.code, result.out, result.err) == (
            1, "", "notifctl: unknown item type 'nosuch' (known: classified, random)\n"
        )
    assert [i["text"] for i in json.loads(cli("list", "--type", "classified", "--json").out)] == ["kept"]


def test_list_shows_rows_another_tool_wrote_one_line_each(cli, db_path):
    # A type no plugin here serves, a text with a line break and an escape sequence: as
    # stored, each item stays one line, and its type can be asked for.
    import sqlite3

    cli("add", "classified", "kept")
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO items (type, text, created_at) VALUES ('weather', ?, '2026-01-01 00:00:00')",
                     ("sunny\nnotifctl: forged\x1b[31m",))
    listed = cli("list", "--type", "weather")
    assert (listed.code, listed.out.count("\n")) == (0, 1)
    assert listed.out.endswith("\tweather\tsunny\\nnotifctl: forged\\x1b[31m\n")
    assert json.loads(cli("list", "--type", "weather", "--json").out)[0]["text"] == "sunny\nnotifctl: forged\x1b[31m"
    assert len(cli("list").lines) == 2


HUGE = "99999999999999999999999"


@pytest.mark.parametrize("args, message", [
    (("rm", HUGE), f"Invalid value for 'ID...': {HUGE} is not in the range 1<=x<=2147483647."),
    (("rm", "1", "2147483648"), "Invalid value for 'ID...': 2147483648 is not in the range 1<=x<=2147483647."),
    (("outbox", "retry", HUGE), f"Invalid value for 'ID': {HUGE} is not in the range 1<=x<=2147483647."),
    (("outbox", "retry", "0"), "Invalid value for 'ID': 0 is not in the range 1<=x<=2147483647."),
    (("list", "--limit", HUGE), f"Invalid value for '--limit': {HUGE} is not in the range 1<=x<=9223372036854775807."),
])
def test_ids_and_counts_out_of_range_are_usage_errors(cli, args, message):
    cli("add", "classified", "kept")
    result = cli(*args)
    assert (result.code, result.out, result.err) == (2, "", f"notifctl: {message}\n")
    assert [i["text"] for i in items(cli)] == ["kept"]


@pytest.mark.parametrize("database_name", ["sqlite", "postgresql"])
def test_the_largest_id_and_count_reach_either_database(cli, request, database_name):
    db = [] if database_name == "sqlite" else ["--db", request.getfixturevalue("pg_url")]
    if db:
        dbmod.open_engine(dbmod.database_url(db[1])).dispose()
    assert cli(*db, "rm", "2147483647").err == "notifctl: no item 2147483647; nothing removed\n"
    assert cli(*db, "outbox", "retry", "2147483647").err == "notifctl: no outbox entry 2147483647\n"
    assert cli(*db, "list", "--limit", str(2**63 - 1)).code == 0


# --- no database by accident ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("add", "classified", "hi"), ("add", "--id", "k", "classified", "hi"), ("list",), ("client", "add", "kiosk"),
    ("rm", "1"), ("status",), ("prune",), ("db", "check"), ("outbox",),
])
def test_no_command_but_db_upgrade_creates_a_database(cli, tmp_path, monkeypatch, args):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("NOTIFD_CONFIG", "")
    result = cli(*args, db=False)
    expected = home / ".local" / "share" / "notifd" / "notifd.db"
    assert result.code == 1, result.out
    assert len(result.err.splitlines()) == 1 and f"no database at {expected}" in result.err
    assert "notifctl db upgrade" in result.err
    assert not home.exists() or not list(home.rglob("*.db"))


def test_a_database_created_by_root_belongs_to_the_owner_of_its_directory(cli, tmp_path):
    import os

    require_root("only root creates files for another user")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # nobody, as /var/lib/notifd belongs to the service user
    target = state / "notifd.db"
    assert cli("--db", str(target), "db", "upgrade", db=False).code == 0
    info = target.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o600)



def test_a_batch_over_the_limit_is_refused_and_stores_nothing(cli, monkeypatch):
    from notifd.cli import items as items_command

    monkeypatch.setattr(items_command, "BATCH_MAX", 3)
    words = ("notifctl: the batch is over 3 lines: split it (one batch is one transaction, which holds the "
             "database's write lock while it is stored)\n")
    for stdin in (b"a\nb\nc\nd\n", b"x" * 5 * 4098):  # too many lines; more bytes than 3 whole lines
        result = cli("add", "classified", "--batch", "-", stdin=stdin)
        assert (result.code, result.err) == (1, words)
    assert cli("add", "classified", "--batch", "-", stdin=b"a\nb\nc\n").lines == ["1", "2", "3"]


@pytest.mark.parametrize("listen", ["tcp:0:interface=127.0.0.1", "stdio:"])
def test_watch_refuses_to_guess_where_a_listen_entry_it_cannot_reach_listens(cli, tmp_path, monkeypatch, listen):
    monkeypatch.delenv("NOTIFD_CONNECT", raising=False)
    config = tmp_path / "notifd.toml"
    config.write_text(f'listen = ["{listen}"]\n')
    result = cli("--config", str(config), "watch")
    assert (result.code, result.err) == (
        1, f"notifctl: cannot tell where to connect from the listen entry '{listen}': give --connect\n")


@pytest.mark.parametrize("variable, value, message", [
    ("NOTIFD_WORKERS", "0", "Invalid value for NOTIFD_WORKERS (environment): 0 is not in the range x>=1."),
    ("NOTIFD_LOG_LEVEL", "loud", "Invalid value for NOTIFD_LOG_LEVEL (environment): 'loud' is not one of "
                                 "'debug', 'info', 'warn', 'error', 'critical'."),
])
def test_a_bad_value_from_the_environment_is_named_as_the_variable(monkeypatch, capsys, variable, value, message):
    from notifd.cli import notifd_main

    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(sys, "argv", ["notifd", "--check-config"])
    with pytest.raises(SystemExit) as exited:
        notifd_main()
    assert (exited.value.code, capsys.readouterr().err) == (2, f"notifd: {message}\n")
    monkeypatch.delenv(variable)
    monkeypatch.setattr(sys, "argv", ["notifd", f"--{variable.removeprefix('NOTIFD_').lower().replace('_', '-')}",
                                      value, "--check-config"])
    with pytest.raises(SystemExit):
        notifd_main()
    assert f"for '--{variable.removeprefix('NOTIFD_').lower().replace('_', '-')}'" in capsys.readouterr().err


def test_a_database_path_may_hold_characters_a_url_would_parse(cli, tmp_path):
    odd = tmp_path / "odd?dir #1" / "notifd.db"
    odd.parent.mkdir()
    assert cli("--db", str(odd), "db", "upgrade", db=False).code == 0
    assert cli("--db", str(odd), "add", "classified", "kept", db=False).out == "1\n"
    assert odd.exists() and [p.name for p in odd.parent.iterdir() if p.suffix == ".db"] == ["notifd.db"]
    backup = tmp_path / "back?up #1.db"
    assert cli("--db", str(odd), "db", "backup", str(backup), db=False).out.endswith(f": schema {store.SCHEMA_HEAD}, 1 items\n")


@pytest.mark.parametrize("argv", [["add", "classified", "ad"], ["add", "--id", "k1", "classified", "ad"]])
def test_a_writer_that_may_not_wake_the_daemons_is_warned_and_its_write_stands(cli, db_path, monkeypatch, argv):
    # An admin who may write the database but not enter its wake-up directory (modes set by
    # hand): the daemons see the post only at their safety poll, which must not pass silently.
    from notifd import wakeup

    directory = wakeup.wakeup_dir(db_path)
    directory.mkdir()

    def listdir(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(wakeup.os, "listdir", listdir)
    result = cli(*argv)
    assert result.code == 0
    assert result.err == (
        f"notifctl: warning: cannot wake the running daemons (Permission denied: {directory}): they will see this "
        "within their poll_interval; see docs/security.md, \"Who may post\"\n")
    monkeypatch.undo()
    assert json.loads(cli("list", "--json").out)[0]["text"] == "ad"
