"""The live page in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): it loads without console errors, `notifctl add` shows in its live feed within a
second, and a post from its form reaches a line-protocol client in notification mode.

`python -m tests.integration.test_live_page docs/img/live-page.png` takes the screenshot
that docs/http.md shows, the same way.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import eventually
from tests.require import require_tool

pytestmark = pytest.mark.integration


def browser():
    """Headless Chromium, as a probe of this machine ran it: no sandbox (root), no background traffic."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = require_tool("chromium", "chromium", "to load the live page")
    driver = require_tool("chromedriver", "chromium-driver", "to drive the browser")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def page():
    driver = browser()
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def test_the_page_shows_posts_live_and_its_form_posts(page, daemon, notifctl):
    from selenium.webdriver.common.by import By

    notifctl("add", "classified", "Nice appart in the 11e.")
    server = daemon()
    token = notifctl("token", "add", "page", "--publish", "classified").stdout.splitlines()[-1]
    page.get(f"http://127.0.0.1:{server.http_port}/")
    eventually(lambda: page.find_element(By.ID, "feed-state").text == "live")
    assert "Nice appart in the 11e." in page.find_element(By.ID, "newest").text
    assert page.find_element(By.ID, "types").text == "classified, random"

    notifctl("add", "classified", "Studio near the canal")
    committed = time.monotonic()  # notifctl printed the id: committed, and the daemons woken
    eventually(lambda: "Studio near the canal" in page.find_element(By.ID, "feed").text, every=0.01)
    assert time.monotonic() - committed < 1.0  # pushed (the page's own refresh is every 5 s)

    listener = server.connect()
    assert listener.ask("notif") == "will send notifs"
    assert listener.read_line() == b"notif: classified\r\n"  # unread ones first: this anonymous client saw none
    assert listener.ask("stop_notif") == "OK"
    while listener.ask("classified?"):
        pass
    assert listener.ask("notif") == "will send notifs"
    page.find_element(By.ID, "post-text").send_keys("Loft with a view")
    page.find_element(By.ID, "post-token").send_keys(token)
    page.find_element(By.CSS_SELECTOR, "#post button").click()
    eventually(lambda: page.find_element(By.ID, "post-result").text.startswith("posted classified"))
    assert listener.read_line() == b"notif: classified\r\n"
    assert listener.ask("stop_notif") == "OK"
    assert listener.ask("classified?") == "Loft with a view"

    page.find_element(By.ID, "post-text").send_keys("Not with this token")
    page.find_element(By.ID, "post-token").clear()
    page.find_element(By.ID, "post-token").send_keys("wrong")
    page.find_element(By.CSS_SELECTOR, "#post button").click()
    eventually(lambda: page.find_element(By.ID, "post-result").text.startswith("401"))
    # The 401 just provoked is the only console line allowed (Chromium logs failed requests).
    errors = [e for e in console_errors(page) if "401" not in e]
    assert errors == []


def test_the_page_keeps_up_with_a_burst_stays_in_its_frame_and_never_puts_a_token_in_a_url(
    page, daemon, notifctl, tmp_path
):
    import urllib.request

    from selenium.webdriver.common.by import By

    server = daemon()
    url = f"http://127.0.0.1:{server.http_port}/"
    headers = urllib.request.urlopen(url).headers
    for rule in ("frame-ancestors 'none'", "form-action 'none'"):
        assert rule in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"

    page.get(url)
    eventually(lambda: page.find_element(By.ID, "feed-state").text == "live")
    # 500 items at once, one of them a text with no space to break at.
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"classified burst {n}\n" for n in range(499)) + "classified " + "x" * 4000 + "\n")
    notifctl("add", "--batch", str(batch))
    eventually(lambda: "xxxx" in page.find_element(By.ID, "feed").text)
    assert len(page.find_elements(By.CSS_SELECTOR, "#feed li")) == 200  # the newest; the page stays light
    statuses = page.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/v1/status')).length")
    assert statuses <= 10  # throttled: not one request per item
    width = page.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1]  # the long text wraps inside the page

    # The form submitted as a browser would without the script (a clone has no listener):
    # no field has a name and the policy forbids the submission, so nothing leaves the page.
    page.execute_script("""
        const form = document.getElementById('post');
        const bare = form.cloneNode(true);
        form.replaceWith(bare);
        bare.querySelector('#post-token').value = 'SECRET-TOKEN';
        bare.querySelector('#post-text').value = 'hello';
        bare.requestSubmit();
    """)
    time.sleep(0.5)
    assert "SECRET" not in page.current_url and page.current_url == url

    # Framed by a page of another origin (another local server): the browser refuses to show it.
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Framing(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"<iframe src='{url}'></iframe>".encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    # Threads: Chromium opens a spare connection it may never use, and a one-thread server
    # would sit on it for a minute before answering the real request.
    other = ThreadingHTTPServer(("127.0.0.1", 0), Framing)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.get(f"http://localhost:{other.server_port}/")
        eventually(lambda: any("frame-ancestors" in line for line in console_errors(page)))
        page.switch_to.frame(page.find_element(By.TAG_NAME, "iframe"))
        assert page.find_elements(By.ID, "feed") == []
    finally:
        other.shutdown()


def screenshot(target: Path) -> None:
    """The docs' screenshot: a daemon with a few items, the page after a live post."""
    import subprocess
    import tempfile

    from tests.integration.conftest import DaemonProcess, ensure_database, run_notifctl

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "notifd.db"
        ensure_database(db)
        for type_name, text in [("classified", "Nice appart in the 11e."), ("random", "456902234"),
                                ("classified", "Flat share in the 20e.")]:
            run_notifctl(db, "add", type_name, text)
        server = DaemonProcess(db).start()
        driver = browser()
        try:
            driver.get(f"http://127.0.0.1:{server.http_port}/")
            time.sleep(1)
            run_notifctl(db, "add", "classified", "Studio near the canal")
            run_notifctl(db, "add", "random", "89765234756")
            time.sleep(1)
            driver.save_screenshot(str(target))
        finally:
            driver.quit()
            server.stop()
    subprocess.run(["ls", "-l", str(target)], check=False)


if __name__ == "__main__":
    import sys

    screenshot(Path(sys.argv[1]))
