"""JUnit XML for `check --junit FILE`, one testcase per connectivity case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def write(doc: dict[str, Any], path: Path) -> None:
    """Write the check document as a JUnit testsuite."""
    cases = doc["cases"]
    suite = ET.Element("testsuite", name=f"testbed-{doc['cni']}-{doc['backend']}",
                       tests=str(len(cases)),
                       failures=str(sum(c["status"] == "fail" for c in cases)),
                       skipped=str(sum(c["status"] == "skip" for c in cases)))
    for c in cases:
        tc = ET.SubElement(suite, "testcase", classname=c["path"],
                           name=f"{c['src']} -> {c['dst']}",
                           time=f"{c['latency_ms'] / 1000:.6f}")
        if c["status"] == "fail":
            ET.SubElement(tc, "failure", message=c["reason"])
        elif c["status"] == "skip":
            ET.SubElement(tc, "skipped", message=c["reason"])
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
