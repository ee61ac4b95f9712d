"""An address of its own for each replica: a network namespace, as pods have.

``open_places(n)`` makes n network namespaces (``ip netns add``), each joined to
this one by a veth pair with a /30 of its own (10.X.Y.4k+1 here, 10.X.Y.4k+2 in
the namespace, where the replica listens on port 8000); a replica runs in its
namespace under ``ip netns exec``. Without root or iproute2, or where the kernel
refuses, the places are loopback addresses (127.0.0.2, 127.0.0.3, ...) with a
free port each, and ``note`` says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Place", "Places", "free_port_below_ephemeral", "open_places"]

POD_PORT = 8000
# 10.200.0.0/13: one /24 of it per run, picked at random among those unused here.
_SUBNETS = [
    ipaddress.IPv4Network(f"10.{a}.{b}.0/24")
    for a in range(200, 208)
    for b in range(256)
]


@dataclasses.dataclass(frozen=True)
class Place:
    """Where one replica runs: the argv prefix that enters it, and its address."""

    prefix: tuple[str, ...]
    host: str
    port: int

    @property
    def address(self) -> str:
        """``HOST:PORT``."""
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Places:
    """The places, how they were made, and why not in namespaces if not."""

    places: list[Place]
    kind: str  # "netns" or "loopback"
    note: str = ""


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; its output (CalledProcessError with its stderr if it fails)."""
    program = shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run(
        [program, *args], check=True, capture_output=True, text=True
    ).stdout


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = _ip("-4", "-o", "addr")
    words = (line.split() for line in out.splitlines())
    return [
        ipaddress.ip_interface(w[w.index("inet") + 1]).network
        for w in words
        if "inet" in w
    ]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for subnet in random.sample(_SUBNETS, 64):
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    msg = "no free /24 in 10.200.0.0/13"
    raise OSError(msg)


@contextlib.contextmanager
def _namespaces(count: int) -> Iterator[list[Place]]:
    """``count`` namespaces with a veth pair each; all removed on exit."""
    subnet = _free_subnet()
    tag = f"{os.getpid()}"
    made: list[tuple[str, str]] = []
    try:
        places = []
        for n in range(count):
            name, link = f"ssfleet-{tag}-{n}", f"sf{tag}x{n}"
            outside = subnet.network_address + 4 * n + 1
            inside = outside + 1
            _ip("netns", "add", name)
            made.append((name, link))
            _ip(
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                name,
            )
            _ip("addr", "add", f"{outside}/30", "dev", link)
            _ip("link", "set", link, "up")
            _ip("-n", name, "addr", "add", f"{inside}/30", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            places.append(Place(("ip", "netns", "exec", name), str(inside), POD_PORT))
        yield places
    finally:
        for name, link in made:
            kill_all_in(name)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", link)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", name)


def kill_all_in(namespace: str) -> None:
    """SIGKILL every process left in ``namespace`` (nothing if all is well)."""
    with contextlib.suppress(subprocess.CalledProcessError):
        for pid in map(int, _ip("netns", "pids", namespace).split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_below_ephemeral() -> int:
    """A free port on 127.0.0.1 where no client's own (ephemeral) port can be."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low = int(text.split()[0])
    for port in range(low - 1, 1023, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    msg = f"no free port below the ephemeral range ({low})"
    raise OSError(msg)


def _loopback(count: int) -> list[Place]:
    hosts = [f"127.0.0.{2 + n}" for n in range(count)]
    return [Place((), host, _free_port(host)) for host in hosts]


def _why_not_namespaces() -> str:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    return ""


@contextlib.contextmanager
def open_places(count: int, *, namespaces: bool = True) -> Iterator[Places]:
    """``count`` places: network namespaces if possible, else loopback addresses."""
    why = "" if namespaces else "not asked for"
    why = why or _why_not_namespaces()
    with contextlib.ExitStack() as stack:
        if not why:
            try:
                places = stack.enter_context(_namespaces(count))
            except subprocess.CalledProcessError as error:
                why = f"{' '.join(map(str, error.cmd))}: {error.stderr.strip()}"
            except OSError as error:
                why = str(error)
            else:
                yield Places(places, "netns")
                return
    yield Places(_loopback(count), "loopback", f"no network namespaces ({why})")
