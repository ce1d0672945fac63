"""`python3 -m testbed_node ...`: JSON on stdout; failures as one `{"error": ...}` line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from testbed_node import AgentError, UsageError, cni


def _fail(message: str, code: int) -> NoReturn:
    print(json.dumps({"error": message}), flush=True)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a JSON error line and exit 2."""

    def error(self, message: str) -> NoReturn:
        """Usage to stderr, the reason as JSON to stdout."""
        self.print_usage(sys.stderr)
        _fail(f"{self.prog}: {message}", 2)


def _container_spec(text: str) -> Any:
    from testbed_node import podspec
    try:
        return podspec.parse_container_spec(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _pod_list(text: str) -> list[tuple[str, list[Any]]]:
    from testbed_node import podspec
    try:
        items = json.loads(text)
        if not isinstance(items, list) or not items:
            raise ValueError("expected a non-empty JSON list")
        return [(str(i["name"]), [podspec.parse_container_spec(str(c))
                                  for c in i.get("containers") or podspec.DEFAULT_CONTAINERS])
                for i in items]
    except (ValueError, TypeError, KeyError) as e:
        raise argparse.ArgumentTypeError(f"pods: {e}") from e
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _targets(text: str) -> Any:
    from testbed_node import probe
    try:
        return probe.parse_targets(sys.stdin.read() if text == "-" else text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"targets: {e}") from e


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def build_parser() -> Parser:
    """The agent's command line."""
    p = Parser(prog="testbed_node", description="In-node agent of testbed.")
    p.add_argument("--conf-dir", default=os.environ.get("CNI_CONF_DIR", cni.DEFAULT_CONF_DIR),
                   help="CNI configuration directory (env CNI_CONF_DIR)")
    p.add_argument("--cni-path", default=os.environ.get("CNI_PATH", cni.DEFAULT_CNI_PATH),
                   help="plugin directories, ':'-separated (env CNI_PATH)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    pod = sub.add_parser("pod", help="pods: netns + CNI + processes").add_subparsers(
        dest="pod_cmd", required=True, parser_class=Parser)
    add = pod.add_parser("add", help="create a pod")
    add.add_argument("name")
    add.add_argument("--container", dest="containers", action="append", type=_container_spec,
                     metavar="SPEC", help="NAME=http:PORT | NAME=sleep | NAME=cmd:ARGV "
                     "(repeatable; default app=http:8080)")
    add.add_argument("--ready-timeout", type=_seconds, default=15.0)
    many = pod.add_parser("add-many", help="create several pods, their workloads booting "
                          "side by side")
    many.add_argument("pods", type=_pod_list, metavar="JSON",
                      help='[{"name": NAME, "containers": [SPEC, ...]}, ...]')
    many.add_argument("--ready-timeout", type=_seconds, default=15.0)
    many.add_argument("--wait-cni", type=_seconds, default=0.0, metavar="SECONDS",
                      help="first wait up to SECONDS for the CNI (as `ready`)")
    many.add_argument("--cni-file", dest="cni_files", action="append", default=[],
                      metavar="PATH", help="with --wait-cni: a file the CNI daemon writes "
                      "when ready (repeatable)")
    for name, text in (("del", "delete a pod (idempotent)"), ("show", "one pod's record")):
        pod.add_parser(name, help=text).add_argument("name")
    pod.add_parser("list", help="every pod on this node")
    ex = pod.add_parser("exec", help="run a command in a pod's netns")
    ex.add_argument("name")
    ex.add_argument("--rusage", action="store_true",
                    help="after the command, one JSON line on stderr: its CPU and wall seconds")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")

    pr = sub.add_parser("probe", help="HTTP from inside a pod")
    pr.add_argument("pod")
    pr.add_argument("url")
    pr.add_argument("--count", type=_positive_int, default=3)
    pr.add_argument("--timeout", type=_seconds, default=3.0)
    pr.add_argument("--header", action="append", default=[], help="'Name: value'")
    pm = sub.add_parser("probe-many", help="HTTP from inside a pod to several URLs at once")
    pm.add_argument("pod")
    pm.add_argument("targets", type=_targets, metavar="JSON",
                    help='[{"url": URL, "count": N, "timeout": S, "headers": {...}}, ...] '
                    '("-": from stdin)')

    c = sub.add_parser("cni", help="CNI operations").add_subparsers(
        dest="cni_cmd", required=True, parser_class=Parser)
    c.add_parser("check", help="CNI CHECK a pod's attachment").add_argument("pod")
    ver = c.add_parser("version", help="CNI VERSION of a plugin")
    ver.add_argument("plugin")
    ver.add_argument("--cni-version", default="1.0.0")

    d = sub.add_parser("daemon", help="readiness probes + service proxy (kubelet/kube-proxy)"
                       ).add_subparsers(dest="daemon_cmd", required=True, parser_class=Parser)
    for name, text in (("run", "run in the foreground"), ("start", "start detached (idempotent)")):
        dp = d.add_parser(name, help=text)
        dp.add_argument("--period", type=_seconds, default=1.0, help="probe and sync period")
    d.add_parser("status", help="whether it runs and its last sync")
    d.add_parser("stop", help="SIGTERM the running daemon")

    ready = sub.add_parser("ready", help="wait for a CNI config and its plugins")
    ready.add_argument("--timeout", type=_seconds, default=0.0)
    ready.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                       help="a file the CNI daemon writes when ready; must be non-empty "
                       "(repeatable)")
    sub.add_parser("setup", help="node start-up chores")
    sub.add_parser("boot", help="the node's command: setup, its result to --log, then sleep"
                   ).add_argument("--log", required=True, metavar="PATH")
    return p


def run(args: argparse.Namespace) -> Any:
    """Dispatch one parsed command; return its JSON-able result (an int: exit code only)."""
    from testbed_node import node, pods, podspec

    if args.cmd == "daemon":
        from testbed_node import daemon
        if args.daemon_cmd == "run":
            return daemon.run(max(args.period, 0.1))
        if args.daemon_cmd == "start":
            return daemon.start(max(args.period, 0.1))
        return daemon.status() if args.daemon_cmd == "status" else daemon.stop()
    paths = cni.search_path(args.cni_path)
    if args.cmd == "setup":
        return node.setup(bin_dir=paths[0])
    if args.cmd == "boot":
        node.boot(args.log, bin_dir=paths[0])
    if args.cmd == "ready":
        return node.wait_ready(args.conf_dir, paths, args.timeout, tuple(args.files))
    runtime = cni.CniRuntime(paths)
    mgr = pods.PodManager(runtime, conf_dir=args.conf_dir)
    if args.cmd == "pod" and args.pod_cmd == "add-many" and args.wait_cni:
        state = node.wait_ready(args.conf_dir, paths, args.wait_cni, tuple(args.cni_files))
        if not state["ready"]:
            raise AgentError(f"the CNI is not ready after {args.wait_cni:g}s: "
                             f"{state['reason']}")
    if args.cmd == "cni":
        if args.cni_cmd == "version":
            info = runtime.version(args.plugin, args.cni_version)
            return {"plugin": args.plugin, "path": runtime.plugin_path(args.plugin), **info}
        return mgr.check(args.pod)
    if args.cmd == "probe":
        return mgr.probe(args.pod, args.url, args.count, args.timeout, args.header)
    if args.cmd == "probe-many":
        return mgr.probe_many(args.pod, args.targets)
    actions: dict[str, Callable[[], Any]] = {
        "add": lambda: mgr.add(args.name, podspec.check_specs(
            args.containers or [podspec.parse_container_spec(s)
                                for s in podspec.DEFAULT_CONTAINERS]),
            args.ready_timeout),
        "add-many": lambda: mgr.add_many(args.pods, args.ready_timeout),
        "del": lambda: mgr.delete(args.name),
        "list": mgr.pods,
        "show": lambda: mgr.show(args.name),
    }
    if args.pod_cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise UsageError("pod exec needs a command: pod exec NAME -- CMD...")
        return int(mgr.exec(args.name, argv, rusage=args.rusage))
    return actions[args.pod_cmd]()


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print; map errors to exit codes 1 (failure) and 2 (bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except AgentError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 1)
    except Exception as e:  # every failure still answers in one JSON line
        _fail(f"{type(e).__name__}: {e}", 1)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
