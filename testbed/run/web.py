"""`run --web`: Locust's own web UI on 127.0.0.1 against a live cluster, kept until Ctrl-C."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from testbed import console
from testbed.cluster import model
from testbed.cluster.handle import Cluster
from testbed.cni import Cni
from testbed.errors import StepError
from testbed.images import by_name, resolve
from testbed.lifecycle.pipeline import Step
from testbed.lifecycle.pipeline import run as run_steps
from testbed.lifecycle.wait import TIMEOUTS, until
from testbed.load.locust import MASTER_PORT, USER_CLASS
from testbed.provider.base import ContainerSpec, Provider
from testbed.run import targets
from testbed.run.options import RunOptions
from testbed.scenario import Scenario
from testbed_contract.node import LOCUSTFILE, in_pod

WEB_PATHS = ("pod-to-service", "nodeport", "ingress", "container-to-container")
UI_PORT = 8089


def locust_name(cluster: str) -> str:
    """`<cluster>-locust`: the Locust master with the web UI."""
    return f"{cluster}-locust"


def all_targets(provider: Provider, cluster: str, scenario: Scenario
                ) -> dict[str, dict[str, Any]]:
    """Targets of every path a worker in a client pod can drive."""
    svc, port, node_port = targets.first_service_port(scenario)
    cluster_ip = targets.service(provider, cluster, svc)["cluster_ip"]
    out: dict[str, dict[str, Any]] = {
        "pod-to-service": {"urls": [f"http://{cluster_ip}:{port}/"]},
        "container-to-container": {"urls": ["http://127.0.0.1:8080/"]},
    }
    if node_port:
        out["nodeport"] = {"urls": [f"http://{ip}:{node_port}/"
                                    for ip in targets.node_ips(provider, cluster)]}
    if scenario.ingress:
        edge = targets.edge(provider, cluster)
        rule = scenario.ingress[0]
        out["ingress"] = {"urls": [f"http://{edge['ingress_ip']}:80{rule.paths[0].path}"],
                          "headers": {"Host": rule.host}}
    return out


def start_ui(provider: Provider, cluster: str, scenario: Scenario, port: int) -> str:
    """Start the master (web UI published on 127.0.0.1:port) and a worker per client pod."""
    name = locust_name(cluster)
    node_image = resolve(by_name("node")).tag
    tg = all_targets(provider, cluster, scenario)
    env = {"TESTBED_TARGETS": json.dumps(tg), "TESTBED_SEED": str(scenario.load.seed),
           "PYTHONUNBUFFERED": "1"}
    # On the node network: Docker publishes no ports from an internal network (the internet
    # one is internal), and workers in pods reach the node network through their node.
    info = provider.run(ContainerSpec(
        name=name, image=node_image, cluster=cluster, role="client", hostname=name,
        network=model.network_name(cluster), command=["sleep", "infinity"], init=True,
        ports={f"{UI_PORT}/tcp": ("127.0.0.1", port)}, env=env))
    master_ip = info.ip or ""
    classes = [USER_CLASS[p] for p in WEB_PATHS if p in tg]
    provider.spawn(name, ["python3", "-m", "locust", "-f", LOCUSTFILE, "--master",
                          "--web-host", "0.0.0.0", "--web-port", str(UI_PORT),
                          "--master-bind-port", str(MASTER_PORT), "--class-picker",
                          "-u", str(scenario.load.users), "-r", str(scenario.load.spawn_rate),
                          "--logfile", "/tmp/locust-master.log", *classes], env)
    pods = targets.client_pods(provider, cluster, scenario)
    for pod in pods:
        provider.spawn(pod["node_container"], in_pod(pod["name"], [
            "python3", "-m", "locust", "-f", LOCUSTFILE, "--worker", "--master-host",
            master_ip, "--master-port", str(MASTER_PORT), "--logfile",
            f"/tmp/locust-worker-{pod['name']}.log"]), env)
    url = f"http://127.0.0.1:{port}/"

    def workers_joined() -> bool:
        try:
            with urllib.request.urlopen(url + "stats/requests", timeout=2) as resp:
                return int(json.load(resp).get("worker_count", 0)) >= len(pods)
        except OSError:
            return False

    until(workers_joined, TIMEOUTS.locust,
          f"{len(pods)} Locust workers to join the master at {url}", lambda: provider.logs(name))
    return url


def serve(provider: Provider, scenario: Scenario, cni: Cni, backend: str,
          opts: RunOptions) -> None:
    """Bring a cluster up, open the UI, and keep both until Ctrl-C; the cluster handle then
    tears down (unless --keep), as it does after any failure."""
    name = f"web-{int(time.time()) % 1_000_000:06d}"
    with Cluster(provider, name, keep=opts.keep) as cluster:

        def bring_up(c: Cluster) -> None:
            c.up(scenario, cni, backend)

        def open_ui(c: Cluster) -> None:
            url = start_ui(provider, c.name, scenario, opts.web_port)
            console.info(f"Locust web UI: {url}  (cluster {c.name}; pick user classes = "
                         "paths, start a swarm; Ctrl-C here stops the load and tears the "
                         "cluster down)")

        try:
            run_steps([Step("Bringing the cluster up", bring_up, quiet=True),
                       Step("Starting Locust (web UI)", open_ui)], cluster)
            while True:
                time.sleep(1)
                if not provider.containers(cluster=name, role="client"):
                    raise StepError(f"the Locust container of {name} is gone")
        except KeyboardInterrupt:
            console.info(" ! stopping")
