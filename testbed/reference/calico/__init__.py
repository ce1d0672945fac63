"""Reference Calico: calico-node (startup, felix, confd + BIRD 2) and the calico CNI plugins."""

REFERENCE_VERSION = "0.1.0"
UPSTREAM_VERSION = "v3.31.0"
