"""Statistics over repeated trials: medians with intervals, verdicts, load sweeps and knees."""
