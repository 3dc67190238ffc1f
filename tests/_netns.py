"""Network namespaces as stand-in hosts: each gets a veth link to the test's own
(root) namespace, with addresses in 10.200.x.x on those links only.

``NetnsHosts(2)`` makes ``lumasched-<pid>-<i>`` namespaces; host side of link
``i`` is ``10.200.X.(4i+1)``, the namespace side ``10.200.X.(4i+2)`` (a /30 per
link, X picked at random). Servers bind the host side of link 0; every namespace
routes the test's /24 through its own link, so traffic flows only between the
namespaces made here and the root namespace's veth ends. ``skip_reason()`` says
why namespaces cannot be made (not root, no ``ip``, not permitted).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import attrs

__all__ = ["NetnsHosts", "skip_reason"]


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)


def skip_reason() -> str | None:
    """None when this process may create network namespaces and veth links."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    name = f"lumasched-probe-{os.getpid()}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        return f"'ip netns add' is not permitted here: {made.stderr.strip()}"
    try:
        link = _ip("link", "add", "lsprobe0", "type", "veth", "peer", "name", "lsprobe1")
        if link.returncode != 0:
            return f"veth links cannot be created here: {link.stderr.strip()}"
        _ip("link", "del", "lsprobe0")
    finally:
        _ip("netns", "del", name)
    return None


@attrs.define
class NetnsHosts:
    count: int
    subnet: int = attrs.field(factory=lambda: random.randint(1, 254))
    names: list[str] = attrs.Factory(list)

    def host_side(self, i: int) -> str:
        return f"10.200.{self.subnet}.{4 * i + 1}"

    def ns_side(self, i: int) -> str:
        return f"10.200.{self.subnet}.{4 * i + 2}"

    @property
    def server_address(self) -> str:
        """Where the test binds its servers: the host side of link 0."""
        return self.host_side(0)

    def create(self) -> None:
        tag = f"{os.getpid() % 100000}{self.subnet}"
        for i in range(self.count):
            name = f"lumasched-{tag}-{i}"
            outer, inner = f"lso{tag}{i}"[:15], f"lsi{tag}{i}"[:15]
            self.names.append(name)
            steps: list[tuple[str | None, tuple[str, ...]]] = [
                (None, ("netns", "add", name)),
                (None, ("link", "add", outer, "type", "veth", "peer", "name", inner)),
                (None, ("link", "set", inner, "netns", name)),
                (None, ("addr", "add", f"{self.host_side(i)}/30", "dev", outer)),
                (None, ("link", "set", outer, "up")),
                (name, ("addr", "add", f"{self.ns_side(i)}/30", "dev", inner)),
                (name, ("link", "set", inner, "up")),
                (name, ("link", "set", "lo", "up")),
                (name, ("route", "add", f"10.200.{self.subnet}.0/24", "via", self.host_side(i))),
            ]
            for netns, args in steps:
                done = _ip(*args, netns=netns)
                if done.returncode != 0:
                    raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def exec_prefix(self, i: int) -> list[str]:
        """Run a command inside namespace ``i``."""
        return ["ip", "netns", "exec", self.names[i]]

    def destroy(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and so the pair.
        for name in self.names:
            _ip("netns", "del", name)
        self.names.clear()
