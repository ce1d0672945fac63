"""Results: a directory per run (summary.json, CSVs, Locust's files) and a SQLite store of runs."""

from testbed.results.rundir import RunDir
from testbed.results.store import Store, default_path
from testbed.results.summary import (
    SECTIONS,
    ResultsError,
    Summary,
    new_run_id,
    normalize,
)

__all__ = ["SECTIONS", "ResultsError", "RunDir", "Store", "Summary", "default_path",
           "new_run_id", "normalize"]
