"""A real headless browser (Debian's chromium + chromedriver, driven by selenium) for the QA
page tests. ``make test`` installs chromium; elsewhere the tests skip with the reason."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser_or_skip(tmpdir):
    """A selenium Chrome driver on Debian's chromium; skips when it is not installed."""
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--allow-file-access-from-files", f"--user-data-dir={tmpdir}", "--window-size=1400,1600"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def check_page(driver, path, screenshot=None):
    """Open a page from the file system; every <img> must have loaded (naturalWidth > 0) and
    every relative link must open a page that is not a browser error page.

    Returns
    -------
    (n_images, n_links)
    """
    url = "file://" + os.path.abspath(path)
    driver.get(url)
    bad_imgs = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")
    assert not bad_imgs, f"{path}: images that did not load: {bad_imgs}"
    nimg = driver.execute_script("return document.images.length;")
    hrefs = driver.execute_script("return Array.from(document.links).map(a => a.href);")
    if screenshot:
        driver.save_screenshot(screenshot)
    for href in sorted(set(hrefs)):
        assert href.startswith("file://"), f"{path}: link {href} leaves the QA tree"
        driver.get(href)
        assert not driver.current_url.startswith("chrome-error://"), f"{path}: link {href} does not resolve"
        state = driver.execute_script("return document.readyState;")
        assert state == "complete", f"{path}: {href} did not load ({state})"
        target = href[len("file://"):].split("#")[0]
        assert os.path.exists(target), f"{path}: link {href} points to a missing file"
    driver.get(url)
    return nimg, len(hrefs)
