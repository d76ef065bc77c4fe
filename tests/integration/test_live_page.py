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
