"""Weave Net on this machine: the source build's binaries and install step work for real; a
cluster is refused up front because this kernel has no dummy links (weaver needs one)."""

from __future__ import annotations

import json

import pytest
from conftest import RUN_ID, run_cli

from testbed.constants import LABEL_CLUSTER
from testbed.provider.docker import DockerProvider

pytestmark = pytest.mark.docker


def _run(provider: DockerProvider, image: str, argv: list[str], **kw: object) -> str:
    out = provider.client.containers.run(image, entrypoint=argv, remove=True, **kw)
    return bytes(out).decode()


def test_weaver_and_weaveutil_are_weave_2_6_5_built_from_source(
        provider: DockerProvider, built: dict[str, str]) -> None:
    image = built["weave"]
    assert _run(provider, image, ["/home/weave/weaver", "--version"]).strip() == "weave 2.6.5"
    # weaveutil is the CNI plugin when called as weave-net; it speaks CNI up to 0.3.0, the
    # version of the conflist that weave 2.6.5's setup-cni writes (and we render).
    out = _run(provider, image, ["sh", "-c", "ln -s /usr/bin/weaveutil /tmp/weave-net && "
                                 "CNI_COMMAND=VERSION /tmp/weave-net </dev/null"])
    doc = json.loads(out)
    assert doc["cniVersion"] == "0.3.1"
    assert "0.3.0" in doc["supportedVersions"]


def test_setup_cni_installs_the_versioned_plugin_and_its_links(
        provider: DockerProvider, built: dict[str, str]) -> None:
    out = _run(provider, built["weave"], [
        "sh", "-c", "mkdir -p /opt/cni/bin && /home/weave/weave --local setup-cni && "
        "ls -l /opt/cni/bin"])
    assert "weave-plugin-2.6.5" in out
    assert "weave-net -> weave-plugin-2.6.5" in out and "weave-ipam -> weave-plugin-2.6.5" in out


def test_up_is_refused_before_any_node_starts_on_a_kernel_without_dummy_links(
        provider: DockerProvider, built: dict[str, str]) -> None:
    name = f"tbt-wv-{RUN_ID}"
    res = run_cli("up", "bench", "--cni", "weave", "--name", name)
    flt = {"label": f"{LABEL_CLUSTER}={name}"}
    assert provider.client.containers.list(all=True, filters=flt) == []
    assert provider.client.networks.list(filters=flt) == []
    assert provider.client.volumes.list(filters=flt) == []
    if res.returncode == 0:  # a kernel with dummy links: weave runs; this machine has none
        run_cli("down", name)
        pytest.skip("this kernel has dummy links: the refusal does not apply")
    assert res.returncode == 2, res.stderr
    assert "dummy" in res.stderr and "Traceback" not in res.stderr
