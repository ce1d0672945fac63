"""The host orchestrator's labels, names and defaults (the node never sees Docker labels)."""

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


ETCD_PORT = 2379

# Node and edge networks come from this pool (TESTBED_SUBNET_POOL overrides it): clear of every
# CNI's default pod pool (10.244/16, 192.168/16, 10.32/12) and of the default service CIDR.
NODE_SUBNET_POOL = "172.30.0.0/16"
# Seeds and counts are stored in SQLite INTEGER columns (signed 64-bit).
INT64_MAX = 2**63 - 1

# Node containers never use --privileged (refused on some engines): explicit
# capabilities, unconfined seccomp/apparmor, and sysctls fixed at create time.
NODE_CAPS = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_BIND_SERVICE",
             "IPC_LOCK", "KILL", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "FOWNER",
             "MKNOD", "SYS_CHROOT"]
# systempaths=unconfined: /proc/sys writable, as in upstream's privileged DaemonSet pods. The
# CNI plugins and daemons set per-interface sysctls (calico's proxy_arp and route_localnet on
# each cali* veth, felix's forwarding) in the node's network namespace; only net.* sysctls
# are written, and those are per namespace.
NODE_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"]
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    # An IPv4 cluster: no IPv6 on the node's interfaces, nor on those made later (cni0,
    # flannel.1, pod veths), so no DAD, MLD or router solicitations on the dataplane.
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}

# A CNI release name as users give it (`calico@v3.31.0`, scenario `cni.version`).
RELEASE_PATTERN = r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$"
