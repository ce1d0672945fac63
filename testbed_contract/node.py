"""Where the node agent lives inside a node container, how it is run, and the files it writes."""

from __future__ import annotations

# The node image holds testbed_node and testbed_contract under AGENT_ROOT (on its PYTHONPATH).
AGENT_ROOT = "/opt/testbed"
AGENT_CMD = ["python3", "-m", "testbed_node"]


def in_pod(pod: str | None, argv: list[str], *, rusage: bool = False) -> list[str]:
    """argv as exec'd in a node: in a pod's network namespace through the agent (`rusage`: the
    agent adds a last stderr line with the command's CPU use), or, with `pod` None, as is."""
    if not pod:
        return list(argv)
    return [*AGENT_CMD, "pod", "exec", *(["--rusage"] if rusage else []), pod, "--", *argv]


# Locust's file for every phase, shipped in the node image with the agent.
LOCUSTFILE = f"{AGENT_ROOT}/testbed_node/locustfile.py"
# The pods' HTTP workload and the probe, as modules run inside a node or a pod.
WORKLOAD_MODULE = "testbed_node.workload"
PROBE_MODULE = "testbed_node.probe"
# Container kinds that serve the HTTP identity on their port: nginx (`http`, the load path)
# and the Python server (`pyhttp`, which also serves /bytes?n=N).
HTTP_KINDS = ("http", "pyhttp")
KERNEL_MODULE = "testbed_node.kernel"

# What the node's start-up chores (`agent setup`, run as the node boots) printed.
NODE_SETUP_LOG = "/run/testbed-setup.json"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

# The node daemon (readiness and service proxy): its state and its log.
DAEMON_RUN_DIR = "/run/testbed"
DAEMON_STATUS_FILE = f"{DAEMON_RUN_DIR}/daemon.json"
DAEMON_LOG_FILE = "/var/log/testbed/daemon.log"
