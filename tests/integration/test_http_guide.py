"""docs/http.md as a user follows it: every `curl` command it shows runs as written by a
shell (only the port changes, to the test daemon's), with the tokens the guide's own
`notifctl` commands print, and answers what the guide shows after it."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.integration.conftest import _ENV, TIMEOUT, read_line
from tests.require import require_tool

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).parents[2] / "docs" / "http.md"


def shown_commands() -> list[tuple[str, str | None]]:
    """Each curl command of the guide (continued lines joined), with the JSON block shown right after its block."""
    text = GUIDE.read_text()
    found = []
    for match in re.finditer(r"^```sh\n(.*?)^```\n", text, flags=re.S | re.M):
        after = re.match(r"\n```json\n(.*?)\n```", text[match.end():], flags=re.S)
        block = match.group(1).replace("\\\n", " ")
        curls = [line for line in block.splitlines() if line.startswith("curl ")]
        for n, line in enumerate(curls):
            found.append((line, after.group(1) if after and n == len(curls) - 1 else None))
    return found


def test_the_guide_shows_a_curl_command_for_every_endpoint():
    paths = {re.sub(r"\?.*", "", re.search(r"http://127\.0\.0\.1:8788(\S*)", line).group(1)) for line, _ in shown_commands()}
    assert paths >= {"/v1/items/classified", "/v1/items/classified/next", "/v1/items/random/next", "/v1/events",
                     "/v1/status", "/healthz"}


def test_every_curl_command_of_the_guide_answers_as_shown(daemon, notifctl, tmp_path):
    require_tool("curl", "curl", "to run docs/http.md's commands")
    server = daemon()
    # The guide's own commands for the tokens its curl commands use.
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    kiosk = notifctl("client", "add", "kiosk", "--types", "classified").stdout.splitlines()[-1]
    env = {**_ENV, "TOKEN": token, "KIOSK_TOKEN": kiosk}
    # Someone listening, so that the status shows connections of each kind.
    line = server.connect()
    assert line.ask("notif") == "will send notifs"
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", open_timeout=TIMEOUT) as ws:
        ws.send("random?")
        assert ws.recv(TIMEOUT).isdigit()
        ws.send("notif")
        assert ws.recv(TIMEOUT) == "will send notifs"
        for command, shown in shown_commands():
            command = command.replace("127.0.0.1:8788", f"127.0.0.1:{server.http_port}")
            if " -N " in command:  # a stream: its first lines, then Ctrl-C
                stream = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True, env=env,
                                          stderr=subprocess.DEVNULL)
                try:
                    assert read_line(stream.stdout) == ": notifd events\n", command
                    notifctl("add", "classified", "Studio near the canal")
                    event = [read_line(stream.stdout) for _ in range(4)][1:]
                    assert event[1] == "event: classified\n", (command, event)
                    assert json.loads(event[2].removeprefix("data: "))["text"] == "Studio near the canal"
                finally:
                    stream.kill()
                    stream.wait()
                continue
            result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=TIMEOUT)
            assert result.returncode == 0, (command, result.stderr)
            if "/healthz" in command:
                assert result.stdout == "ok\n", command
                continue
            answer = json.loads(result.stdout)
            assert "status" not in answer, (command, answer)  # no problem JSON
            if shown is not None:
                example = json.loads(shown)
                assert answer.keys() == example.keys(), (command, answer)
                if "connections" in example:
                    assert answer["connections"] == {"line": 1, "notif_mode": 2, "websocket": 1, "events": 0,
                                                     "http": 1}, answer
                    assert answer["types"] == example["types"]
                    assert answer["newest"]["classified"][0].keys() == example["newest"]["classified"][0].keys()
                elif "text" in example:
                    assert (answer["type"], answer["text"]) == (example["type"], example["text"]), command
    line.close()
