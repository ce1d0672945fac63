"""Reference Weave Net: weaver (bridge, kernel VXLAN, peer mesh, IPAM, HTTP API) and weaveutil.

Wire and file facts shared by the pieces (documented once here):
- bridge `weave` (MAC = the peer name, as upstream), pods attach with veths `vethwepl<id[:7]>`;
- cross-node frames travel in kernel VXLAN on device `vxlan-6784`, VNI 6784, UDP port 6784 (the
  port upstream's fastdp uses), one flat L2 segment; BUM traffic floods to every connected peer
  through all-zero FDB entries, unicast MACs are learned;
- the peer mesh is newline-delimited JSON over TCP 6783 (hello, then gossip heartbeats);
- IPAM state is JSON at `<db-prefix>data.json` (upstream keeps BoltDB at `<db-prefix>data.db`).
"""

UPSTREAM_VERSION = "2.8.1"
VERSION = f"{UPSTREAM_VERSION}-reference"
PROTOCOL = "weave-reference"
PROTOCOL_VERSION = 1

BRIDGE = "weave"
DATAPATH_NAME = "reference-vxlan"
VXLAN_DEVICE = "vxlan-6784"
VXLAN_VNI = 6784
VXLAN_PORT = 6784
DEFAULT_MTU = 1376  # upstream fastdp's default (1460-byte underlay minus VXLAN and ESP room)
CONTROL_PORT = 6783
HTTP_ADDR = "127.0.0.1:6784"
EXPOSE_ID = "weave:expose"
