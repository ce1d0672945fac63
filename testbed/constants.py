"""Names, labels and defaults shared by the orchestrator (the Docker-side contract)."""

from __future__ import annotations

LABEL_CLUSTER = "io.testbed.cluster"
LABEL_ROLE = "io.testbed.role"
LABEL_NODE = "io.testbed.node"
LABEL_CNI = "io.testbed.cni"
LABEL_BACKEND = "io.testbed.backend"
LABEL_BUILD = "io.testbed.build"
LABEL_IMAGES = "io.testbed.images"

DEFAULT_CLUSTER = "testbed"
MIN_NODES = 1
MAX_NODES = 16

# Inside node containers: where the agent lives and how it is invoked.
AGENT_ROOT = "/opt/testbed"
AGENT_CMD = ["python3", "-m", "testbed.agent"]
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

ETCD_PORT = 2379
