"""Named network namespaces under /var/run/netns (libc syscalls), their links (pyroute2)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_DIR = "/var/run/netns"
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    _check(_libc.setns(fd, _CLONE_NEWNET), "setns")


def path_of(name: str) -> str:
    """The bind-mount path of a named namespace."""
    return name if "/" in name else os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    """Whether a named namespace (its mount point) exists."""
    return os.path.exists(path_of(name))


def create(name: str, lo_up: bool = True) -> str:
    """Create a named namespace (like `ip netns add`), bring its lo up, return its path.

    Pods pass lo_up=False: their runtime brings lo up with the `loopback` CNI plugin.
    """
    os.makedirs(NETNS_DIR, exist_ok=True)
    path = path_of(name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    failure: list[BaseException] = []

    def bind() -> None:  # a thread of its own: unshare moves only the calling thread
        try:
            _check(_libc.unshare(_CLONE_NEWNET), "unshare")
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, _MS_BIND,
                               None), f"bind mount on {path}")
        except BaseException as e:
            failure.append(e)

    worker = threading.Thread(target=bind, name=f"netns-{name}")
    worker.start()
    worker.join()
    try:
        if failure:
            raise failure[0]
        if lo_up:
            set_lo_up(path)
    except BaseException:
        delete(name)
        raise
    return path


def _iproute_in(path: str) -> IPRoute:
    """A netlink socket opened inside the namespace at `path` (pyroute2, imported on use)."""
    from pyroute2 import IPRoute

    with entered(path):
        return IPRoute()


def set_lo_up(path: str) -> None:
    """Bring the loopback interface of a namespace up."""
    with _iproute_in(path) as ipr:
        idx = ipr.link_lookup(ifname="lo")
        if not idx:
            raise OSError(errno.ENODEV, f"no lo in {path}")
        ipr.link("set", index=idx[0], state="up")


def delete(name: str) -> bool:
    """Unmount and remove a named namespace; False when it was already gone."""
    path = path_of(name)
    if not os.path.lexists(path):
        return False
    if _libc.umount2(path.encode(), _MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def links(path: str) -> list[dict[str, Any]]:
    """Interfaces of a namespace: name, index, mac, state, mtu, IPv4 addresses."""
    out: list[dict[str, Any]] = []
    with _iproute_in(path) as ipr:
        addrs: dict[int, list[str]] = {}
        for msg in ipr.get_addr(family=socket.AF_INET):
            addrs.setdefault(msg["index"], []).append(
                f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        for msg in ipr.get_links():
            out.append({"name": msg.get_attr("IFLA_IFNAME"), "index": msg["index"],
                        "mac": msg.get_attr("IFLA_ADDRESS"),
                        "state": msg.get_attr("IFLA_OPERSTATE"),
                        "mtu": msg.get_attr("IFLA_MTU"), "addresses": addrs.get(msg["index"], [])})
    return out


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pid_in(pid: int, path: str) -> bool:
    """Whether process `pid` lives in the namespace mounted at `path`."""
    ns = _ns_id(path)
    return ns is not None and _ns_id(f"/proc/{pid}/ns/net") == ns


def _enter_fd(fd: int) -> Callable[[], None]:
    def enter() -> None:
        setns(fd)
    return enter


@contextlib.contextmanager
def _opened(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Switch the calling thread into a namespace and back (sockets made inside stay there)."""
    with _opened("/proc/thread-self/ns/net") as home, _opened(path) as target:
        setns(target)
        try:
            yield
        finally:
            setns(home)


def socket_in(path: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that belongs to the namespace at `path`."""
    with entered(path):
        return socket.socket(family, kind)


def spawn(path: str, argv: Sequence[str], log_path: str | Path,
          env: Mapping[str, str] | None = None) -> int:
    """Start a detached process inside a namespace (new session, output to a log); its pid."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with _opened(path) as fd, open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(env) if env else None,
                                cwd="/", start_new_session=True, close_fds=True,
                                preexec_fn=_enter_fd(fd))
    # The agent exits soon after; the container's init (--init) then reaps the process.
    return proc.pid


def run(path: str, argv: Sequence[str], *, capture: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a process inside a namespace and wait for it (stdio inherited unless captured)."""
    with _opened(path) as fd:
        return subprocess.run(list(argv), capture_output=capture, env=dict(env) if env else None,
                              timeout=timeout, check=False, close_fds=True,
                              preexec_fn=_enter_fd(fd))
