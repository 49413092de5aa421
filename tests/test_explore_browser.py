"""The explorer's page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): the page loads, the map draws, hovering shows a test image, a click decodes, an
interpolation, a traversal and samples render, a typed sentence shows its reconstruction with <unk>
marked; the browser console shows no error and no request goes to any host but the server.

With ``TWINVAE_SCREENSHOTS=DIR`` it saves ``DIR/explorer-mnist.png`` and ``DIR/explorer-ptb.png``;
``TWINVAE_EXPLORE_MNIST_RUN`` / ``TWINVAE_EXPLORE_TEXT_RUN`` name longer-trained runs to show instead of
the tiny ones (that is how the README's screenshots are made)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import twinvae
from tests.test_explore_api import image_run, text_run  # noqa: F401  (the tiny runs' fixtures)
from twinvae.explore.app import build_app
from twinvae.explore.explorer import Explorer
from twinvae.explore.server import Background

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium / chromedriver installed "
                                 "(apt-get install chromium chromium-driver; .ci/run installs them)")]
WAIT_S = 600  # how long to wait for the page before calling it stuck (a hang guard, not a speed test)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                 "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def _serve(run: Path) -> tuple[Background, Explorer]:
    model = twinvae.load(run)
    explorer = Explorer(model, folder=run)
    explorer.warm()
    return Background(build_app(explorer)), explorer


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"the page never showed {what}")


def _count(css: str, n: int):
    return lambda d: len(d.find_elements("css selector", css)) == n


def _open(driver, url: str) -> None:
    driver.get_log("browser"), driver.get_log("performance")  # drop what an earlier page left
    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1", "the map")


def _click(driver, element_id: str) -> None:
    driver.find_element("id", element_id).click()


def _set(driver, element_id: str, value) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(str(value))


def _check_clean(driver, url: str) -> None:
    """No console error or warning from the page, and every request went to the server."""
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    server = urlsplit(url).netloc
    requested = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
    assert any(u.startswith(url + "/api/map") for u in urls), urls
    elsewhere = [u for u in urls if not u.startswith("data:") and urlsplit(u).netloc != server]
    assert not elsewhere, elsewhere


def _map_point(driver, index: int) -> tuple[int, int]:
    """Pixel offsets of test example ``index`` from the map canvas' centre (Selenium's origin)."""
    x, y, w, h = driver.execute_script(
        "const c = document.getElementById('map'), r = c.getBoundingClientRect();"
        "return [state.view.sx(state.map.x[arguments[0]]), state.view.sy(state.map.y[arguments[0]]),"
        " r.width, r.height];", index)
    return round(x - w / 2), round(y - h / 2)


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("TWINVAE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_image_explorer_in_chromium(browser, image_run):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains

    run = Path(os.environ.get("TWINVAE_EXPLORE_MNIST_RUN") or image_run)
    served, explorer = _serve(run)
    try:
        _open(browser, served.url)
        body = browser.find_element("tag name", "body")
        assert body.get_attribute("data-map-points") == str(len(explorer.test))
        canvas = browser.find_element("id", "map")
        ActionChains(browser).move_to_element_with_offset(canvas, *_map_point(browser, 3)).perform()
        _wait(browser, lambda d: d.find_element("id", "hover").is_displayed(), "the hovered image")
        assert f"label {int(explorer.test.labels[3])}" in browser.find_element("id", "hover").text
        ActionChains(browser).move_to_element_with_offset(canvas, *_map_point(browser, 3)).click().perform()
        _wait(browser, _count("#decoded canvas", 1), "the decoded click")
        _click(browser, "pick-a")
        ActionChains(browser).move_to_element_with_offset(canvas, *_map_point(browser, 8)).perform()
        _wait(browser, lambda d: "#8," in d.find_element("id", "hover").text, "the second hovered image")
        _click(browser, "pick-b")
        assert [browser.find_element("id", f"interp-{w}").get_attribute("value") for w in "ab"] == ["3", "8"]
        _set(browser, "interp-steps", 10)
        _click(browser, "interpolate")
        _wait(browser, _count("#interp-output canvas", 10), "the interpolation")
        _click(browser, "traverse")
        _wait(browser, _count("#trav-output canvas", 27), "the traversal grid")
        _click(browser, "sample")
        _wait(browser, _count("#sample-output canvas", 16), "the samples")
        # a decoded picture holds the model's pixels, not a blank canvas
        ink = browser.execute_script("const c = document.querySelector('#decoded canvas');"
                                     "return c.getContext('2d').getImageData(0, 0, 28, 28).data"
                                     ".reduce((s, v, i) => i % 4 ? s : s + v, 0);")
        assert ink > 0
        browser.execute_script("window.scrollTo(0, 0)")
        _screenshot(browser, "explorer-mnist.png")
        _check_clean(browser, served.url)
    finally:
        served.stop()


def test_text_explorer_in_chromium(browser, text_run):  # noqa: F811
    run = Path(os.environ.get("TWINVAE_EXPLORE_TEXT_RUN") or text_run)
    served, explorer = _serve(run)
    try:
        _open(browser, served.url)
        words = explorer.test.examples[2].split()[:6]
        typed = " ".join(words + ["qqqunknownword"])
        _set(browser, "sentence", typed)
        _click(browser, "encode")
        _wait(browser, _count("#nearest li", 5), "the reconstruction and the nearest sentences")
        expected = explorer.model.reconstruct([typed])[0] or "(empty)"
        assert browser.find_element("id", "reconstruction").text == expected
        assert [e.text for e in browser.find_elements("css selector", "#recon-output .unk")] == ["<unk>"]
        _set(browser, "interp-steps", 6)
        _click(browser, "interpolate")
        _wait(browser, _count("#interp-output li", 6), "the homotopy")
        _click(browser, "sample")
        _wait(browser, _count("#sample-output li", 5), "the samples")
        browser.execute_script("window.scrollTo(0, 0)")
        _screenshot(browser, "explorer-ptb.png")
        _check_clean(browser, served.url)
    finally:
        served.stop()
