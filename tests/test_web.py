"""`run --web`: a real browser opens Locust's UI, starts a swarm, and requests reach the cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from browser import CHROMEDRIVER, start_chrome

from testbed.provider.docker import DockerProvider

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "stats/requests", timeout=3) as resp:
        return dict(json.load(resp))


def test_web_ui_in_a_browser_starts_a_swarm_against_the_cluster(built: dict[str, str]) -> None:
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    assert os.path.exists(CHROMEDRIVER), "install Debian's chromium-driver (see .ci/run)"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", "flannel", "--web",
                             "--web-port", str(port), "--users", "6", "--spawn-rate", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 600
        while "Locust web UI" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
        assert "Locust web UI" in seen, seen[-3000:]
        driver = start_chrome()
        driver.get(url)
        for field in ("userCount", "spawnRate"):  # React inputs ignore clear(): select, type
            box = driver.find_element(By.NAME, field)
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys("6")
            assert box.get_attribute("value") == "6"
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        deadline = time.monotonic() + 60
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = _stats(url)
            names = {s["name"]: s for s in stats["stats"] if s["name"] != "Aggregated"}
            if {"pod-to-service", "nodeport", "ingress"} <= set(names) and all(
                    s["num_requests"] > 5 for s in names.values()):
                break
            time.sleep(2)
        names = {s["name"]: s for s in stats["stats"] if s["name"] != "Aggregated"}
        assert {"pod-to-service", "nodeport", "ingress"} <= set(names), stats
        assert all(s["num_failures"] == 0 for s in names.values()), names
        assert stats["worker_count"] >= 2 and stats["user_count"] == 6
        deadline = time.monotonic() + 20  # the UI refreshes its table every few seconds
        while "pod-to-service" not in driver.page_source and time.monotonic() < deadline:
            time.sleep(1)
        assert "pod-to-service" in driver.page_source, "the UI shows the path's row"
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=180)
    assert not [n for n in DockerProvider().clusters() if n.startswith("web-")]
