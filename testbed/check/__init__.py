"""`check`: the connectivity matrix over the Kubernetes traffic paths."""
