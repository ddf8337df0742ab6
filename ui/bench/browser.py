"""Debian's Chromium, headless, driving the page: the page bench's browser side and the browser tests
(tests/test_browser.py) open it with these same helpers."""
from __future__ import annotations

import time


def chromium(width: int = 1280, height: int = 1000):
    """Debian's Chromium, headless, with a profile of its own: (webdriver, profile folder)."""
    import shutil
    import tempfile

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("Debian's chromium and chromium-driver are needed (make browser-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="clasp-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-sync", "--disable-background-networking", "--disable-component-update",
                "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts), profile


def wait_for(cond, what: str, timeout: float = 120) -> None:
    """Until ``cond()`` is true (an exception counts as not yet: the page is still rendering)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - the page is still rendering
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def set_number(d, label: str, value) -> None:
    """Type ``value`` into the number box of the page's control whose label contains ``label``."""
    from selenium.webdriver.common.keys import Keys

    for block in d.find_elements("css selector", "#controls .block"):
        if label in block.text:
            box = block.find_element("css selector", "input[type=number]")
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(str(value), Keys.TAB)
            return
    raise LookupError(f"no control labelled {label!r}")
