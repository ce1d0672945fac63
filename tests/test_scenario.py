"""Scenario validation: every error names the file, the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import RUN_ID, run_cli

from testbed.errors import UserError
from testbed.paths import SCENARIOS_DIR
from testbed.scenario import load

BASE = yaml.safe_load((SCENARIOS_DIR / "default.yaml").read_text())


def _variant(tmp_path: Path, edit: dict[str, object]) -> Path:
    doc = {**BASE, **edit}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml")))
def test_every_shipped_scenario_is_valid(name: str) -> None:
    spec = load(SCENARIOS_DIR / f"{name}.yaml")
    assert spec.nodes >= 1 and spec.deployments


@pytest.mark.parametrize(("edit", "needle"), [
    ({"ingress": [{"host": "a.b", "paths": [{"path": "/", "service": "nope", "port": 80}]}]},
     "unknown service 'nope'"),
    ({"ingress": [{"host": "a.b", "paths": [{"path": "/", "service": "echo", "port": 81}]}]},
     "service echo has no port 81"),
    ({"services": [{"name": "echo", "type": "NodePort", "selector": {"app": "echo"},
                    "ports": [{"port": 80, "nodePort": 29999}]}]}, "outside 30000-32767"),
    ({"services": [{"name": "x", "selector": {"app": "nobody"}, "ports": [{"port": 80}]}],
      "ingress": []}, "matches no deployment"),
    ({"serviceCIDR": "10.244.0.0/16", "cni": {"name": "flannel", "podCIDR": "10.244.0.0/16"}},
     "overlaps the pod CIDR"),
    ({"nodes": 0}, "nodes"),
    ({"edge": False}, "ingress rules need the edge"),
    ({"colour": "blue"}, "colour"),
    ({"deployments": [{"name": "a", "containers": [{"name": "x", "port": 70000}]}],
      "services": [], "ingress": [], "networkPolicies": []}, "port"),
])
def test_bad_scenarios_name_the_file_and_field(tmp_path: Path, edit: dict[str, object],
                                               needle: str) -> None:
    path = _variant(tmp_path, edit)
    with pytest.raises(UserError) as err:
        load(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_a_bad_scenario_stops_up_before_anything_is_created(tmp_path: Path) -> None:
    path = _variant(tmp_path, {"ingress": [{"host": "a.b", "paths": [
        {"path": "/", "service": "nope", "port": 80}]}]})
    res = run_cli("up", str(path), "--name", f"never-{RUN_ID}")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "unknown service" in res.stderr
    listed = run_cli("list", "--json")
    assert f"never-{RUN_ID}" not in listed.stdout
