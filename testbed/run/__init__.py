"""`run` and `compare`: up, check, ceilings, load, throughput, store, report, down."""
