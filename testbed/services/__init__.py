"""Services the way the API server and kube-proxy see them: allocation, the etcd registry, `up`."""
