"""Reference Flannel: flanneld (etcd datastore mode) and the flannel CNI meta-plugin."""

REFERENCE_VERSION = "0.1.0"
UPSTREAM_VERSION = "v0.28.0"
