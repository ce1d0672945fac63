"""`up` as one list of named steps: this module lists them; the step modules import only
lower layers (the context, the provider), never this list or each other's callers."""

from __future__ import annotations

from testbed.cluster import model
from testbed.cni import Cni
from testbed.cni.select import check_overrides
from testbed.edge import up as edge
from testbed.errors import UserError
from testbed.lifecycle import create
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.pipeline import Step
from testbed.provider.base import Provider
from testbed.scenario import Scenario
from testbed.services import up as services


def steps(ctx: UpContext) -> list[Step[UpContext]]:
    """The whole of `up`, in order (looked up at call time, so a test can replace one)."""
    n, cni = ctx.scenario.nodes, ctx.cni.name
    pods = len(ctx.scenario.pods())
    return [
        Step("Ensuring node images", create.ensure_images),
        Step(f"Checking the kernel for {cni}", create.preflight),
        Step(f"Creating network {model.network_name(ctx.name)}", create.create_network),
        Step(f"Starting etcd and {n} node{'s' if n > 1 else ''}, installing {cni}",
             create.start_cluster),
        Step(f"Starting {cni} daemons ({ctx.backend})", create.start_cni),
        Step(f"Deploying {pods} pods as each node's {cni} becomes ready"
             + ("; starting the internet" if ctx.scenario.edge else ""), create.deploy_pods),
        *([Step("Programming services", services.program_services)]
          if ctx.scenario.services else []),
        *([Step("Applying network policies", create.apply_policies)]
          if ctx.scenario.network_policies and ctx.cni.enforces_policy else []),
        *([Step("Starting the edge (ingress)", edge.start_edge)]
          if ctx.scenario.edge else []),
    ]


def prepare(provider: Provider, scenario: Scenario, name: str, cni: Cni) -> None:
    """Everything `up` refuses before it creates anything (exit 2, nothing left behind)."""
    model.validate_name(name)
    check_overrides(cni, scenario.cni.images)
    if scenario.cni.build != "upstream":  # a release the source build cannot make: say so now
        cni.source_images(scenario.cni.version or cni.default_release,
                          scenario.cni.module or cni.module)
    if name in provider.clusters():
        raise UserError(f"a cluster named {name!r} already exists: remove it with "
                        f"`python -m testbed down {name}` or choose another --name")
