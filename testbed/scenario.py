"""Scenarios: the Kubernetes-shaped YAML a cluster and a run are built from, validated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from testbed.constants import MAX_NODES, MIN_NODES
from testbed.errors import UserError
from testbed.paths import SCENARIOS_DIR

DEFAULT_SCENARIO = SCENARIOS_DIR / "default.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CniConfig(_Model):
    """Which CNI, backend and build; optional MTU and image overrides."""

    name: str = "flannel"
    backend: str | None = None
    build: Literal["auto", "upstream", "reference"] = "auto"
    mtu: int | None = Field(default=None, ge=576, le=9000)
    pod_cidr: str | None = None
    images: dict[str, str] = Field(default_factory=dict)


class Container(_Model):
    """A process in a pod; `port` makes it the HTTP workload on that port."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    port: int | None = Field(default=None, ge=1, le=65535)


class Deployment(_Model):
    """Replicas of one pod template, spread round-robin across nodes."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    replicas: int = Field(default=1, ge=0, le=200)
    containers: list[Container] = Field(
        default_factory=lambda: [Container(name="app", port=8080)], min_length=1)

    @field_validator("containers")
    @classmethod
    def _unique(cls, v: list[Container]) -> list[Container]:
        names = [c.name for c in v]
        ports = [c.port for c in v if c.port]
        if len(set(names)) != len(names) or len(set(ports)) != len(ports):
            raise ValueError("container names and ports must be unique within a pod")
        return v


class Scenario(_Model):
    """A whole testbed scenario."""

    name: str = "default"
    nodes: int = Field(default=3, ge=MIN_NODES, le=MAX_NODES)
    cni: CniConfig = Field(default_factory=CniConfig)
    deployments: list[Deployment] = Field(default_factory=list)

    def pods(self) -> list[tuple[str, int, Deployment]]:
        """(pod name, node index from 1, deployment) with replicas spread over the nodes."""
        out: list[tuple[str, int, Deployment]] = []
        slot = 0
        for dep in self.deployments:
            for i in range(dep.replicas):
                out.append((f"{dep.name}-{i}", slot % self.nodes + 1, dep))
                slot += 1
        return out


def load(path: str | Path | None) -> Scenario:
    """Load and validate a scenario file; errors name the file, the field and what is allowed."""
    file = Path(path) if path else DEFAULT_SCENARIO
    if not file.exists() and path and (SCENARIOS_DIR / f"{path}.yaml").exists():
        file = SCENARIOS_DIR / f"{path}.yaml"
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError as e:
        raise UserError(f"scenario file {file} does not exist") from e
    except yaml.YAMLError as e:
        raise UserError(f"{file}: not valid YAML: {e}".replace("\n", " ")) from e
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{file}: {where}: {first['msg']}") from e
