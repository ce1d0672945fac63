"""`fault NAME KIND TARGET [--for S] [--rate R]`, `fault NAME clear` and `fault NAME list`."""

from __future__ import annotations

import click

from testbed import console
from testbed.cli.base import _errors, _print_json, _provider, cli
from testbed.errors import UserError
from testbed.faults.spec import KINDS, REFUSED, TARGETS_HELP

HELP = "\n".join(f"  {k:16} {v}" for k, v in KINDS.items())


@cli.command("fault", epilog=f"\b\nKinds:\n{HELP}\n  {'delay, loss':16} refused: this kernel "
             f"has no netem\n\nTARGET: {TARGETS_HELP}.")
@click.argument("name")
@click.argument("kind")
@click.argument("target", required=False, default=None)
@click.option("--for", "for_", default=None, metavar="S",
              help="Hold the fault S seconds (15, 15s, 2m), then undo it; without it the "
                   "fault stays until `fault NAME clear`.")
@click.option("--rate", default="", help="For `rate`: a tc rate, e.g. 10mbit.")
@click.option("--json", "as_json", is_flag=True, help="Print the fault's timings as JSON.")
@_errors
def fault(name: str, kind: str, target: str | None, for_: str | None, rate: str,
          as_json: bool) -> None:
    """Inject a fault into cluster NAME (KIND TARGET), or `clear` / `list` its faults."""
    from testbed.faults import control, runner, spec
    from testbed.faults.facts import Facts

    if kind not in ("clear", "list"):
        spec.check_kind(kind)  # before the engine is asked anything: delay/loss, typos
    provider = _provider()
    if kind in ("clear", "list"):
        if target:
            raise UserError(f"fault {name} {kind} takes no TARGET; allowed: "
                            f"`python -m testbed fault {name} {kind}`")
        if kind == "list":
            records = runner.active(name)
            if as_json:
                _print_json(records)
            for r in records:
                console.info(f"{r.get('fault')} (id {r.get('id')}, pid {r.get('pid')})")
            if not records and not as_json:
                console.info(f"no fault recorded on {name}")
            return
        done = runner.clear(provider, name)
        console.info(f"undone on {name}: {', '.join(done)}" if done else
                     f"no fault recorded on {name}")
        return
    if target is None:
        raise UserError(f"fault {kind}: TARGET is missing; allowed: {TARGETS_HELP}")
    facts = Facts.find(provider, name)
    seconds = spec.parse_duration(for_) if for_ is not None else None
    f = spec.build(kind, target, name, len(facts.nodes), seconds, rate)
    if seconds is None and kind not in spec.INSTANT:
        active = runner.inject(provider, name, f, facts)
        console.info(f"{f.label} on {name}: in effect ({active.applied - active.start:.2f}s); "
                     f"undo it with `python -m testbed fault {name} clear`")
        return
    console.info(f"{f.label} on {name}" + (f": holding {seconds:g}s" if seconds else ""))
    active = runner.hold(provider, name, f)
    doc = {**active.timings(), "control_plane_s": control.recovered(provider, name, f,
                                                                     active.undone)}
    if as_json:
        _print_json(doc)
        return
    back = doc["control_plane_s"]
    console.info(f"{f.label}: applied in {doc['apply_s']:.2f}s, undone in {doc['undo_s']:.2f}s"
                 + (f"; control plane back {back:.1f}s after the undo" if back is not None
                    else ""))


__all__ = ["REFUSED", "fault"]
