"""Hosts made of network namespaces on one machine: one namespace per host, each with a veth pair to a bridge
that lives in a namespace of its own, so the root namespace has no address on the test's subnet and no traffic of
the test ever touches the machine's own interfaces or its 127.0.0.1.

A ``Host`` starts processes inside its namespace (``ip netns exec``) and runs Python callables there too: its
worker threads have entered the namespace with ``setns(2)`` (network namespaces are per thread), so an httpx or
psycopg2 client created in such a thread connects from that host. Everything is named with ``PREFIX``; ``remove_all``
removes what an earlier crashed run left behind (its namespaces and the processes inside them).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

PREFIX = "mlh-"
SUBNET = "10.213.0"
BRIDGE_NS = f"{PREFIX}net"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def why_unavailable() -> str | None:
    """None when namespaces can be made here, otherwise the reason (for a skip)."""
    if os.geteuid() != 0:
        return "needs root: the hosts are network namespaces (ip netns) joined by veth pairs"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` for the network namespaces"
    probe = f"{PREFIX}probe"
    made = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not available here: {made.stderr.strip()}"
    return None


def namespaces() -> list[str]:
    listed = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def remove_all() -> None:
    """SIGKILL to every process inside one of our namespaces, then the namespaces themselves (and with them
    their veth ends and the bridge)."""
    for ns in namespaces():
        for pid in ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in namespaces():
        ip("netns", "del", ns, check=False)


def enter(ns: str) -> None:
    """Moves the calling thread (only it) into the network namespace ``ns``."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Host:
    """A network namespace on the test bridge with one address, ``SUBNET.<number>``."""

    def __init__(self, name: str, number: int) -> None:
        self.name, self.ns, self.address = name, f"{PREFIX}{name}", f"{SUBNET}.{number}"
        self.port_on_bridge = f"v-{name}"  # the veth end plugged into the bridge
        self._pool: ThreadPoolExecutor | None = None

    def create(self) -> Host:
        ip("netns", "add", self.ns)
        ip("-n", BRIDGE_NS, "link", "add", self.port_on_bridge, "type", "veth", "peer", "name", "eth0",
           "netns", self.ns)
        ip("-n", BRIDGE_NS, "link", "set", self.port_on_bridge, "master", "br0", "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def cable(self, plugged: bool) -> None:
        """Plugs or unplugs the host's cable: its port on the bridge goes up or down."""
        ip("-n", BRIDGE_NS, "link", "set", self.port_on_bridge, "up" if plugged else "down")

    def command(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *cmd]

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread of this host: every connection it opens leaves from here."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=self.name,
                                            initializer=enter, initargs=(self.ns,))
        return self._pool.submit(fn, *args, **kwargs).result()

    def thread(self, target: Callable[[], None]) -> Callable[[], None]:
        """``target`` wrapped to run inside this host's namespace, for a thread of one's own."""
        def inside() -> None:
            enter(self.ns)
            target()
        return inside

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def create_bridge() -> None:
    ip("netns", "add", BRIDGE_NS)
    ip("-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    ip("-n", BRIDGE_NS, "link", "set", "br0", "up")

