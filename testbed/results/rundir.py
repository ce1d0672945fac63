"""A run's directory: partial.jsonl while it runs, then summary.json and CSVs; crash-safe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.results import csvs
from testbed.results.atomic import append_line, write_text
from testbed.results.store import Store
from testbed.results.summary import (
    ROW_SECTIONS,
    ResultsError,
    Summary,
    as_rows,
    check_section,
    fold,
    merge_partial,
    new_run_id,
    normalize,
    utc_now,
)

PARTIAL = "partial.jsonl"
SUMMARY = "summary.json"


class RunDir:
    """`<out>/<run_id>/`: whatever is measured is on disk (and in the store) once it arrives."""

    def __init__(self, path: str | Path, store: Store | None = None) -> None:
        self.path = Path(path).absolute()
        self.store = store

    @property
    def run_id(self) -> str:
        """The run id is the directory's name."""
        return self.path.name

    @classmethod
    def create(cls, out: str | Path, cni: str, backend: str | None = None, *,
               meta: Mapping[str, Any] | None = None, store: Store | None = None,
               run_id: str | None = None) -> RunDir:
        """Make a fresh run directory under `out`, log the run's metadata, open it in the store."""
        run_id = run_id or new_run_id(cni, backend)
        path = Path(out) / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as e:
            raise ResultsError(f"run directory {path} already exists") from e
        except OSError as e:
            raise ResultsError(f"cannot create run directory {path}: {e.strerror}") from e
        head = {"started_at": utc_now(), **(meta or {}),
                "run_id": run_id, "cni": cni, "backend": backend or ""}
        run = cls(path, store)
        if store is not None:
            store.begin(run_id, head, path)
        run.record_partial("meta", head)
        return run

    def record_partial(self, section: str, rows: Any) -> None:
        """Append measured rows (a dict or a list of dicts) durably to partial.jsonl and the store.

        Row sections: paths, throughput, resources, baselines, timeseries (a later row with the
        same key, e.g. the same path, supersedes an earlier one). Dict sections: meta (top-level
        keys), environment, mtu, generator (merged).
        """
        check_section(section)
        line = json.dumps({"section": section, "at": utc_now(), "rows": as_rows(rows)},
                          sort_keys=True, default=str)
        try:
            append_line(self.path / PARTIAL, line)
        except OSError as e:
            raise ResultsError(f"cannot append to {self.path / PARTIAL}: {e.strerror}") from e
        if self.store is not None:
            self.store.record_partial(self.run_id, section, rows)

    def partial(self) -> Summary:
        """Everything recorded so far, folded into summary shape (a torn last line is skipped)."""
        file = self.path / PARTIAL
        if not file.exists():
            return {}
        records = []
        for text in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue  # the process died mid-line; every earlier line is intact
            records.append((record["section"], record["rows"]))
        return fold(records)

    def summary(self) -> Summary | None:
        """The final summary.json, or None while the run has not been finalized."""
        file = self.path / SUMMARY
        return dict(json.loads(file.read_text(encoding="utf-8"))) if file.exists() else None

    def finalize(self, summary: Mapping[str, Any]) -> Summary:
        """Write CSVs then summary.json (atomically), and store the run; returns what was written.

        Sections the summary omits are filled from what was recorded partially, so a runner
        that stops early can finalize with `{"interrupted": True}` and keep every measurement.
        """
        if summary.get("run_id", self.run_id) != self.run_id:
            raise ResultsError(f"summary is for run {summary['run_id']}, not {self.run_id}")
        final = self._write({**summary, "run_id": self.run_id})
        if self.store is not None:
            self.store.finalize(final, self.path)
        return final

    def _write(self, summary: Mapping[str, Any]) -> Summary:
        final = normalize(merge_partial(summary, self.partial()))
        final.setdefault("finished_at", utc_now())
        # Where render_run(final, run.path) puts the report, so summary.json names it up front.
        final["report"] = final.get("report") or str(self.path / "report.html")
        final["run_dir"] = str(self.path)
        try:
            for section in ROW_SECTIONS:
                csvs.write(self.path, section, final.get(section) or [])
            write_text(self.path / SUMMARY, json.dumps(final, indent=2, sort_keys=True,
                                                       default=str) + "\n")
        except OSError as e:
            raise ResultsError(f"cannot write results into {self.path}: {e.strerror}") from e
        return final

    def recover(self) -> Summary:
        """Finalize a run whose process died: what it recorded, marked interrupted."""
        done = self.summary()
        if done is not None:
            if self.store is not None:
                stored = self.store.get(self.run_id)
                if stored is None or stored.get("status") == "running":
                    self.store.finalize(done, self.path)
            return done
        if not (self.path / PARTIAL).exists():
            raise ResultsError(f"{self.path} holds no recorded results to recover")
        stored = self.store.get(self.run_id) if self.store is not None else None
        if stored is not None and stored.get("status") != "running":
            # The store closed the run already (interrupt_stale): bring the directory level.
            return self._write(stored)
        return self.finalize({"interrupted": True, "status": "interrupted"})

    def artifacts(self) -> list[Path]:
        """Every file in the run directory (Locust's CSVs and HTML included), sorted by name."""
        return sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
