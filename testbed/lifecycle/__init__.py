"""The cluster lifecycle: `up` as a pipeline of named steps with one rollback, and `down`."""
