"""The nightly matrix file: CNIs (NAME[:BACKEND][@VERSION]) x scenarios, with trials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from testbed import cni as cnis
from testbed import yamlfile
from testbed.errors import UserError
from testbed.paths import SCENARIOS_DIR
from testbed.validation import one_line

# Not in scenarios/ itself: every scenarios/*.yaml is a scenario.
DEFAULT_MATRIX = SCENARIOS_DIR / "nightly" / "default.yaml"
MAX_TRIALS = 20


class Matrix(BaseModel):
    """A night's matrix: every CNI runs every scenario `trials` times (each trial one run)."""

    model_config = ConfigDict(extra="forbid")

    cnis: list[str] = Field(min_length=1, max_length=20)
    scenarios: list[str] = Field(default_factory=lambda: ["light"], min_length=1,
                                 max_length=10)
    trials: int = Field(default=1, ge=1, le=MAX_TRIALS)
    duration_s: float | None = Field(default=None, ge=1, le=3600)
    users: int | None = Field(default=None, ge=1, le=5000)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)

    @field_validator("cnis")
    @classmethod
    def _cnis(cls, v: list[str]) -> list[str]:
        for value in v:
            try:
                cnis.parse(value)
            except UserError as e:
                raise ValueError(f"{value!r}: {e}; allowed: {cnis.valid_names()}") from None
        if len(set(v)) != len(v):
            raise ValueError("a CNI is listed twice; allowed: each NAME[:BACKEND][@VERSION] once")
        return v


@dataclass(frozen=True)
class Entry:
    """One cell of the matrix: a CNI on a scenario."""

    cni: str  # as written, NAME[:BACKEND][@VERSION], the backend filled in
    scenario: str

    @property
    def label(self) -> str:
        """The series name in the store and the reports: `flannel:vxlan [light]`."""
        return f"{self.cni} [{Path(self.scenario).stem}]"


def entries(matrix: Matrix) -> list[Entry]:
    """CNI x scenario, in file order."""
    out = []
    for value in matrix.cnis:
        module, backend, version = cnis.parse(value)
        name = f"{module.name}:{backend}" + (f"@{version}" if version else "")
        out += [Entry(name, s) for s in matrix.scenarios]
    return out


def load(path: str | Path | None) -> Matrix:
    """Read and validate a matrix file; a refusal is one line naming the file and field."""
    file = Path(path) if path else DEFAULT_MATRIX
    data = yamlfile.load(file, "nightly matrix file")
    if not isinstance(data, dict):
        raise UserError(f"{file}: the top level is {type(data).__name__}; allowed: a mapping "
                        "of cnis, scenarios, trials, duration_s, users, seed")
    try:
        return Matrix.model_validate(data)
    except ValidationError as e:
        raise UserError(one_line(Matrix, file, e)) from None
