"""What the host orchestrator and the node agent both read: paths, commands, etcd keys, messages.

Stdlib only: this package is installed on the host and shipped into every node image.
"""
