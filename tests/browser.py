"""Headless Chromium for the tests: open a report and say what each chart really drew."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# Per chart: its id, its rendered size, and how many plotted elements have a drawn box.
_CHARTS_JS = """
return Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {
  var box = svg.getBoundingClientRect();
  var drawn = Array.from(svg.querySelectorAll('.series')).filter(function (el) {
    var b = el.getBBox(); return b.width > 0 || b.height > 0; });
  return {id: svg.getAttribute('data-chart'), width: box.width, height: box.height,
          series: drawn.length};
});
"""


def start_chrome() -> Any:
    """Debian's headless Chromium under selenium (the caller quits it)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    assert os.path.exists(CHROMEDRIVER), "install Debian's chromium-driver (see .ci/run)"
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=opts)


def browser_charts(page: Path) -> list[dict[str, Any]]:
    """Every chart on an offline HTML page as headless Chromium laid it out (folded sections
    opened first, so their charts are laid out too)."""
    driver = start_chrome()
    try:
        driver.set_window_size(1400, 1000)
        driver.get(page.resolve().as_uri())
        driver.execute_script("document.querySelectorAll('details').forEach("
                              "function (d) { d.open = true; });")
        found: list[dict[str, Any]] = driver.execute_script(_CHARTS_JS)
        return found
    finally:
        driver.quit()
