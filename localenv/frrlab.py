"""A real-FRR lab: the NVA (AS 65001) and two stand-in route servers (AS 65515) in namespaces.

Owns the lab's namespaces, daemons, config files and teardown, the NVA agent process started
inside the NVA namespace (the `frr_lab` pytest fixture and `demo --lab` use it) and the relay its
change reports leave the namespace by (`HostRelay`). It must not know
how the agent renders config: it only writes the *operator's* configs and reads FRR's JSON.

Command line (also used by scripts/frr-lab.sh and bench/agent_convergence.py):
    python -m localenv.frrlab up|down|status [--name NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

FRR_BIN = Path("/usr/lib/frr")
FRR_RELOAD = FRR_BIN / "frr-reload.py"
REPO_ROOT = Path(__file__).resolve().parents[1]
NODES = ("nva", "rs1", "rs2")
MARKER = ".ars-frr-lab"
T = TypeVar("T")


class LabUnavailable(Exception):
    """The lab cannot run on this machine (not root, no FRR, no namespaces): skip, do not fail."""


class LabError(Exception):
    """The lab was runnable but did not come up or did not behave."""


def wait_until(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `fn` until it returns something truthy; raise LabError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def _not_yet(fn: Callable[[], bool]) -> Callable[[], bool]:
    """`fn`, with vtysh failing counted as "not yet": a daemon just started under load may not
    answer its vty socket at once; a daemon that never does is the deadline's message."""

    def probe() -> bool:
        try:
            return fn()
        except LabError:
            return False

    return probe


# ----------------------------------------------------------------------------- configs ------
@dataclass(frozen=True)
class Addresses:
    """The design's addresses (DESIGN.md §1); the lab uses 10.0.1.4 for the NVA, as allowed."""

    nva_ip: str = "10.0.1.4"
    rs_ips: tuple[str, str] = ("10.0.2.4", "10.0.2.5")
    firewall_ip: str = "10.0.3.4"
    nva_asn: int = 65001
    rs_asn: int = 65515


OPERATOR_POLICY = """\
bgp as-path access-list bogon-asns seq 5 permit _0_
bgp as-path access-list bogon-asns seq 10 permit _23456_
bgp as-path access-list bogon-asns seq 15 permit _6449[6-9]_
bgp as-path access-list bogon-asns seq 20 permit _6450[0-9]_
bgp as-path access-list bogon-asns seq 25 permit _6451[01]_
!
route-map rmap-bogon-asns deny 5
 match as-path bogon-asns
exit
!
route-map rmap-bogon-asns permit 10
exit
!
"""
"""The operator's inbound bogon filter (DESIGN.md §1): unrelated to the agent, must survive it."""

def lab_policy(addr: Addresses = Addresses(), extra_neighbors: tuple[str, ...] = ()) -> str:
    """The agent's local policy file for this lab (nva_agent.policy): the two route servers, the
    default route (or the VPN design's two halves), next hops in AzureFirewallSubnet (10.0.3.0/26).

    No `local_asn` line, so an intent with another local AS still reaches FRR and gets its 409.
    """
    neighbors = "".join(f"  - {{ip: {ip}, asn: {addr.rs_asn}}}\n" for ip in (*addr.rs_ips, *extra_neighbors))
    return f"neighbors:\n{neighbors}prefixes: [0.0.0.0/0, 0.0.0.0/1, 128.0.0.0/1]\nnext_hops: [10.0.3.0/26]\n"


def strong_token() -> str:
    """A token the agent accepts: 32 random bytes, base64url."""
    return secrets.token_urlsafe(32)


OPERATOR_UNRELATED_LINES = (
    "ip route 192.0.2.0/24 blackhole",
    "bgp as-path access-list bogon-asns seq 5 permit _0_",
    "route-map rmap-bogon-asns deny 5",
    " match as-path bogon-asns",
    "neighbor 10.0.2.4 route-map rmap-bogon-asns in",
    "neighbor 10.0.2.4 description ars-instance-0",
    "timers bgp 1 3",
)
"""Lines of the operator's config the agent does not manage; e2e tests check they survive."""


def nva_config(
    addr: Addresses = Addresses(),
    *,
    announce: bool = True,
    next_hop: str | None = "10.0.3.4",
    neighbors: tuple[str, ...] | None = None,
    out_filter: bool = True,
    operator_out_map: bool = False,
    redistribute: bool = False,
) -> str:
    """The NVA's config as the agent left it (its `nva-agent-*` objects, with the descriptions it
    writes) plus the operator's own lines; healthy by default, the keywords produce the broken
    variants.

    Broken variants edit the agent's objects (someone changed them by hand): `next_hop` lost or
    wrong, `announce=False` (its network statement removed), a neighbor removed, `out_filter=False`
    (the 65515 deny gone and the final deny widened to a permit). `operator_out_map` binds an
    operator route-map outbound on the route servers instead (the agent must answer 409), and
    `redistribute` makes the NVA hold an extra route (the static 192.0.2.0/24) that must never
    reach them. Policy objects come before `router bgp`: a route-map referenced before it exists
    filters everything until `bgp route-map delay-timer` (5 s) fires (frr-lab.md pitfall 1).
    """
    host = socket.gethostname()  # vtysh prints its own hostname (pitfall 8)
    rs = addr.rs_ips if neighbors is None else neighbors
    out: list[str] = [
        "frr defaults traditional",
        f"hostname {host}",
        "no ipv6 forwarding",
        "service integrated-vtysh-config",
        "!",
        "ip route 192.0.2.0/24 blackhole",
        "!",
        OPERATOR_POLICY.rstrip("\n"),
        "ip prefix-list nva-agent-prefixes seq 5 permit 0.0.0.0/0",
        "!",
    ]
    if out_filter:  # without it the route servers get their own routes back (path 65001 65515)
        out += [
            f"bgp as-path access-list nva-agent-ars-asns seq 5 permit _{addr.rs_asn}_",
            "!",
            "route-map nva-agent-ars-out deny 5",
            " description nva-agent: never send Route Server its routes",
            " match as-path nva-agent-ars-asns",
            "exit",
            "!",
        ]
    out += [
        "route-map nva-agent-ars-out permit 10",
        " description nva-agent: the intent's prefixes",
        " match ip address prefix-list nva-agent-prefixes",
    ]
    if next_hop:
        out.append(f" set ip next-hop {next_hop}")
    out += ["exit", "!", f"route-map nva-agent-ars-out {'deny' if out_filter else 'permit'} 100"]
    out += [" description nva-agent: nothing else reaches Route Server", "exit", "!"]
    out += ["route-map nva-agent-originate permit 10"]
    out += [" description nva-agent: marks the network statements the agent wrote", "exit", "!"]
    if operator_out_map:  # the operator's own outbound policy: sends everything
        out += ["route-map rmap-sdwan-out permit 10", "exit", "!"]
    out += [
        f"router bgp {addr.nva_asn}",
        f" bgp router-id {addr.nva_ip}",
        " timers bgp 1 3",
        " coalesce-time 100",  # lab speed-up: first UPDATE 25-70 ms after Established (pitfall 2)
    ]
    for i, ip in enumerate(rs):
        out += [
            f" neighbor {ip} remote-as {addr.rs_asn}",
            f" neighbor {ip} description ars-instance-{i}",
            f" neighbor {ip} ebgp-multihop 255",
            f" neighbor {ip} timers connect 1",  # connect-retry 120 s otherwise (pitfall 5)
        ]
    out += [" !", " address-family ipv4 unicast"]
    if announce:
        out.append("  network 0.0.0.0/0 route-map nva-agent-originate")
    if redistribute:
        out.append("  redistribute static")
    out_map = "rmap-sdwan-out" if operator_out_map else "nva-agent-ars-out"
    for ip in rs:
        out.append(f"  neighbor {ip} route-map rmap-bogon-asns in")
        # detaching the route-map instead would send nothing at all: FRR 8.4's default
        # `bgp ebgp-requires-policy` withholds every route from an eBGP peer without policy
        out.append(f"  neighbor {ip} route-map {out_map} out")
    out += [" exit-address-family", "exit", "!"]
    return "\n".join(out) + "\n"


def rs_config(addr: Addresses, index: int) -> str:
    """A stand-in Azure Route Server instance: AS 65515, advertises the VNet, keeps Adj-RIB-In."""
    ip = addr.rs_ips[index]
    return f"""\
frr defaults traditional
hostname {socket.gethostname()}
no ipv6 forwarding
service integrated-vtysh-config
!
router bgp {addr.rs_asn}
 bgp router-id {ip}
 no bgp ebgp-requires-policy
 timers bgp 1 3
 coalesce-time 100
 neighbor {addr.nva_ip} remote-as {addr.nva_asn}
 neighbor {addr.nva_ip} ebgp-multihop 255
 neighbor {addr.nva_ip} timers connect 1
 !
 address-family ipv4 unicast
  network 10.0.0.0/16
  neighbor {addr.nva_ip} soft-reconfiguration inbound
 exit-address-family
exit
!
"""


# ----------------------------------------------------------------------------- processes ----
def _alive(pid: int) -> bool:
    """A zombie counts as gone: PID 1 in this sandbox reaps orphans only every 1-2 s (pitfall 11)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _run(args: list[str], timeout: float = 15, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, pass_fds=pass_fds)


def _must(args: list[str], timeout: float = 15, pass_fds: tuple[int, ...] = ()) -> str:
    res = _run(args, timeout, pass_fds)
    if res.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


# ----------------------------------------------------------------------------- relay --------
_LISTEN_IN_NAMESPACE = """\
import socket, sys
chan = socket.socket(fileno=int(sys.argv[1]))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(64)
socket.send_fds(chan, [str(sock.getsockname()[1]).encode()], [sock.fileno()])
"""


class HostRelay:
    """A port on a lab namespace's own loopback that leads to a port on the host's loopback.

    The agent in the NVA namespace cannot reach the host's 127.0.0.1: each namespace has its own
    loopback. Rather than a veth into the host namespace (touching the host's interfaces and
    routes), a short helper run with `ip netns exec` makes a listening socket *inside* the
    namespace and hands it back over a socket pair (SCM_RIGHTS); a socket keeps the namespace it
    was made in, whoever holds it. A thread here accepts on it and relays each connection to the
    host port: nothing is routed between the namespaces, and only this one port leads out.
    The mirror of `start_agent`'s `--listen-fd` (a host socket handed into the namespace).
    """

    def __init__(self, namespace: str, host_port: int) -> None:
        self.host_port = host_port
        ours, theirs = socket.socketpair()
        try:
            _must(["ip", "netns", "exec", namespace, sys.executable, "-c", _LISTEN_IN_NAMESPACE, str(theirs.fileno())],
                  pass_fds=(theirs.fileno(),))  # fmt: skip
            ours.settimeout(10)
            msg, fds, _flags, _addr = socket.recv_fds(ours, 64, 1)
        finally:
            ours.close()
            theirs.close()
        if not fds:
            raise LabError(f"no listening socket came back from namespace {namespace}")
        self.port = int(msg)
        self._listener = socket.socket(fileno=fds[0])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"relay-{namespace}", daemon=True)
        self._thread.start()

    def url(self, path: str = "") -> str:
        """The URL a process inside the namespace uses for `path` on the host port."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, inside: socket.socket) -> None:
        try:
            outside = socket.create_connection(("127.0.0.1", self.host_port), timeout=10)
        except OSError:
            inside.close()
            return
        outside.settimeout(None)
        with self._lock:
            self._open.update((inside, outside))
        back = threading.Thread(target=_pipe, args=(outside, inside), daemon=True)
        back.start()
        _pipe(inside, outside)
        back.join()
        with self._lock:
            self._open.difference_update((inside, outside))
        inside.close()
        outside.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@dataclass
class AgentProcess:
    """The agent running inside the NVA namespace, served on a loopback socket of the host."""

    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log_path: Path
    relay: HostRelay | None = None  # its change reports' way out of the namespace

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class FrrLab:
    """One lab: four namespaces (`<name>-vnet` with a bridge, and one per node), seven daemons."""

    name: str = field(default_factory=lambda: f"arsr{os.getpid()}")
    workdir: Path | None = None
    addr: Addresses = Addresses()
    agents: list[AgentProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path("/tmp") / f"{self.name}-lab"

    # -- paths ------------------------------------------------------------------------------
    @property
    def work(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def node_dir(self, node: str) -> Path:
        return self.work / node

    def ip(self, node: str) -> str:
        return {"nva": self.addr.nva_ip, "rs1": self.addr.rs_ips[0], "rs2": self.addr.rs_ips[1]}[node]

    # -- preconditions ----------------------------------------------------------------------
    @staticmethod
    def check_runnable() -> None:
        if os.geteuid() != 0:
            raise LabUnavailable("the FRR lab needs root (network namespaces, daemons that switch user)")
        missing = [p for p in (FRR_BIN / "bgpd", FRR_BIN / "zebra", FRR_BIN / "staticd", FRR_RELOAD) if not p.exists()]
        if missing or shutil.which("vtysh") is None or shutil.which("ip") is None:
            raise LabUnavailable(
                f"FRR is not installed (missing {[str(p) for p in missing] or 'vtysh/ip'}); "
                "apt-get install -y frr frr-pythontools"
            )
        probe = f"arsrprobe{os.getpid()}"
        res = _run(["ip", "netns", "add", probe])
        if res.returncode != 0:
            raise LabUnavailable(f"cannot create network namespaces: {res.stderr.strip()}")
        _run(["ip", "netns", "del", probe])

    # -- up / down --------------------------------------------------------------------------
    def up(self, timeout: float = 30.0) -> None:
        """Build the lab and wait until both route servers hold 0.0.0.0/0 via the firewall IP."""
        self.check_runnable()
        self.down()  # leftovers of an interrupted run with the same name are ours
        try:
            self._write_files()
            self._make_network()
            for node in ("rs1", "rs2", "nva"):  # route servers first: the NVA's connect finds a listener
                self._start_daemons(node)
            self.wait_converged(timeout)
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop our agents and daemons, delete our namespaces and folder; safe to call twice."""
        for agent in self.agents:
            agent.stop()
        self.agents.clear()
        pids = []
        for node in NODES:
            for pidfile in (self.node_dir(node) / "run").glob("*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pids.append(int(pidfile.read_text().strip()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for node in (*NODES, "vnet"):
            if Path(f"/run/netns/{self.ns(node)}").exists():
                _run(["ip", "netns", "del", self.ns(node)])
        if self.work.exists():
            if not (self.work / MARKER).exists():
                raise LabError(f"{self.work} exists and was not made by the lab; not removing it")
            shutil.rmtree(self.work, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        running = {}
        for node in NODES:
            for pidfile in sorted((self.node_dir(node) / "run").glob("*.pid")):
                pid = int(pidfile.read_text().strip() or 0)
                running[f"{node}/{pidfile.stem}"] = _alive(pid)
        peers: dict[str, Any] = {}
        if running and all(running.values()):
            summary = self.vtysh_json("nva", "show bgp summary json").get("ipv4Unicast", {})
            peers = {ip: p.get("state") for ip, p in summary.get("peers", {}).items()}
        return {"name": self.name, "workdir": str(self.work), "daemons": running, "nva_peers": peers}

    def _write_files(self) -> None:
        self.work.mkdir(parents=True)
        self.work.chmod(0o755)  # daemons drop to user frr (pitfall 12)
        (self.work / MARKER).write_text(f"{os.getpid()}\n")
        configs = {
            "nva": nva_config(self.addr),
            "rs1": rs_config(self.addr, 0),
            "rs2": rs_config(self.addr, 1),
        }
        for node, text in configs.items():
            d = self.node_dir(node)
            (d / "run").mkdir(parents=True)
            (d / "frr.conf").write_text(text)
            (d / "vtysh.conf").write_text("service integrated-vtysh-config\n")
            shutil.chown(d, "frr", "frr")
            for p in d.rglob("*"):
                shutil.chown(p, "frr", "frr")

    def _make_network(self) -> None:
        vnet = self.ns("vnet")
        _must(["ip", "netns", "add", vnet])
        _must(["ip", "-n", vnet, "link", "set", "lo", "up"])
        _must(["ip", "-n", vnet, "link", "add", "br0", "type", "bridge"])
        _must(["ip", "-n", vnet, "link", "set", "br0", "up"])
        for node in NODES:
            ns = self.ns(node)
            _must(["ip", "netns", "add", ns])
            _must(["ip", "-n", ns, "link", "set", "lo", "up"])
            _must(["ip", "-n", vnet, "link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _must(["ip", "-n", vnet, "link", "set", node, "master", "br0", "up"])
            _must(["ip", "-n", ns, "addr", "add", f"{self.ip(node)}/16", "dev", "eth0"])
            _must(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # `network 0.0.0.0/0` needs 0/0 in the RIB (import-check, pitfall 3); Azure gives the
        # real NVA a default route, here a blackhole sends nothing anywhere.
        _must(["ip", "-n", self.ns("nva"), "route", "add", "blackhole", "0.0.0.0/0"])
        _must(["ip", "netns", "exec", self.ns("nva"), "sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def _daemon(self, node: str, daemon: str) -> None:
        d = self.node_dir(node)
        run = d / "run"
        # -f: each daemon reads the integrated file itself; `vtysh -b` would hold bgpd ~3 s.
        _must(
            [
                "ip",
                "netns",
                "exec",
                self.ns(node),
                str(FRR_BIN / daemon),
                "-d",
                "-F",
                "traditional",
                "-P",
                "0",
                "-f",
                str(d / "frr.conf"),
                "-i",
                str(run / f"{daemon}.pid"),
                "-z",
                str(run / "zserv.api"),
                "--vty_socket",
                str(run),
                "--log",
                f"file:{d / daemon}.log",
            ]
        )

    def _start_daemons(self, node: str) -> None:
        for daemon in ("zebra", "bgpd", "staticd") if node == "nva" else ("zebra", "bgpd"):
            self._daemon(node, daemon)

    # -- talking to FRR ---------------------------------------------------------------------
    def vtysh_args(self, node: str) -> list[str]:
        d = self.node_dir(node)
        return ["vtysh", "--config_dir", str(d), "--vty_socket", str(d / "run")]

    def vtysh(self, node: str, *commands: str) -> str:
        args = self.vtysh_args(node)
        for c in commands:
            args += ["-c", c]
        return _must(args)

    def vtysh_json(self, node: str, command: str) -> dict[str, Any]:
        out = self.vtysh(node, command)
        data = json.loads(out) if out.strip() else {}
        return data if isinstance(data, dict) else {}

    def running_config(self, node: str = "nva") -> str:
        return self.vtysh(node, "show running-config")

    def rs_node(self, rs: str | int) -> str:
        if isinstance(rs, int):
            return ("rs1", "rs2")[rs]
        if rs in ("rs1", "rs2"):
            return rs
        return ("rs1", "rs2")[self.addr.rs_ips.index(rs)]

    def received(self, rs: str | int) -> dict[str, dict[str, str]]:
        """What a route server received from the NVA (Adj-RIB-In, before its own loop check).

        {prefix: {"next_hop": ..., "as_path": ...}}; includes routes the route server then
        drops because their AS path contains 65515, as real ARS does silently.
        """
        node = self.rs_node(rs)
        cmd = f"show bgp ipv4 unicast neighbors {self.addr.nva_ip} received-routes json"
        routes = self.vtysh_json(node, cmd).get("receivedRoutes", {})
        return {p: {"next_hop": r.get("nextHop", ""), "as_path": r.get("path", "")} for p, r in routes.items()}

    def best(self, rs: str | int) -> dict[str, dict[str, str]]:
        """The route server's BGP table: {prefix: {"next_hop", "as_path", "peer"}} of best paths."""
        routes = self.vtysh_json(self.rs_node(rs), "show bgp ipv4 unicast json").get("routes", {})
        out = {}
        for prefix, paths in routes.items():
            for p in paths:
                if p.get("bestpath"):
                    hops = p.get("nexthops") or [{}]
                    out[prefix] = {
                        "next_hop": hops[0].get("ip", ""),
                        "as_path": p.get("path", ""),
                        "peer": p.get("peerId", ""),
                    }
        return out

    def learned_routes(self, instance_index: int) -> list[dict[str, Any]] | None:
        """ARM `learnedRoutes` entries for one ARS instance, read from its stand-in.

        Plug into the emulator with `emu.set_learned_source(nva_ip, lab.learned_routes)`.
        None means unknown (the stand-in could not be read), never "no routes".
        """
        if instance_index not in (0, 1):
            return None
        try:
            received = self.received(instance_index)
        except (LabError, subprocess.TimeoutExpired, json.JSONDecodeError):
            return None
        local = self.addr.rs_ips[instance_index]
        return [
            {
                "localAddress": local,
                "network": prefix,
                "nextHop": r["next_hop"],
                "sourcePeer": self.addr.nva_ip,
                "origin": "EBgp",
                "asPath": r["as_path"],
                "weight": 32768,
            }
            for prefix, r in sorted(received.items())
        ]

    def nva_established(self) -> bool:
        peers = self.vtysh_json("nva", "show bgp summary json").get("ipv4Unicast", {}).get("peers", {})
        return all(peers.get(ip, {}).get("state") == "Established" for ip in self.addr.rs_ips)

    def holds_default(self, rs: str | int) -> bool:
        """True when the route server's best 0.0.0.0/0 comes via the firewall with path 65001."""
        r = self.best(rs).get("0.0.0.0/0")
        return r == {
            "next_hop": self.addr.firewall_ip,
            "as_path": str(self.addr.nva_asn),
            "peer": self.addr.nva_ip,
        }

    def wait_converged(self, timeout: float = 15.0) -> None:
        wait_until(_not_yet(self.nva_established), timeout, "the NVA's sessions to both route servers")
        for rs in (0, 1):
            wait_until(_not_yet(functools.partial(self.holds_default, rs)), timeout,
                       f"route server {rs} to hold 0.0.0.0/0")  # fmt: skip

    # -- changing the NVA behind the agent's back (the drift under test) --------------------
    def load_nva_config(self, text: str) -> None:
        """Replace the NVA's running config as an operator would (frr-reload), then soft-clear."""
        conf = self.node_dir("nva") / "frr.conf"  # must be <confdir>/frr.conf or reload runs `write`
        conf.write_text(text)
        d = self.node_dir("nva")
        _must(
            [
                "python3",
                str(FRR_RELOAD),
                "--reload",
                "--stdout",
                "--confdir",
                str(d),
                "--vty_socket",
                str(d / "run"),
                "--rundir",
                str(d / "run"),
                "--log-level",
                "warning",
                str(conf),
            ],
            timeout=60,
        )
        self.vtysh("nva", "clear bgp ipv4 unicast * soft out")

    def stop_nva_bgpd(self) -> None:
        """Stop the NVA's bgpd (an FRR outage); `start_nva_bgpd` brings it back from frr.conf."""
        pidfile = self.node_dir("nva") / "run" / "bgpd.pid"
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not _alive(pid), 10, "the NVA's bgpd to stop")

    def start_nva_bgpd(self) -> None:
        self._daemon("nva", "bgpd")

    # -- the agent --------------------------------------------------------------------------
    def start_agent(
        self,
        token: str,
        extra_env: dict[str, str] | None = None,
        timeout: float = 20,
        scheme: str = "http",
        ca: str | None = None,
        policy: str | None = None,
        lab_mode: bool = False,
        client_cert: tuple[str, str] | None = None,
        report_to: str | None = None,
    ) -> AgentProcess:
        """Start `python -m nva_agent` inside the NVA namespace, served on 127.0.0.1 of the host.

        The listening socket is made here, in the host namespace, and handed over by file
        descriptor: the agent lives in the NVA namespace yet the tests reach it on loopback,
        without a veth into the host. The agent gets `policy` (default: `lab_policy`) as its
        policy file, root-owned in the lab folder; `lab_mode` starts it with `--lab` and no policy.
        `token` goes in NVA_AGENT_TOKEN unless `extra_env` names a NVA_AGENT_TOKEN_FILE.
        `report_to` (a host URL such as `http://127.0.0.1:PORT/api/agent/changes?code=K`) turns on
        the agent's change reports, sent through a `HostRelay` from inside the namespace.
        """
        import httpx  # only the agent part of the lab needs it

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        d = self.node_dir("nva")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NVA_AGENT_FRR_CONFIG_DIR": str(d),
            "NVA_AGENT_FRR_VTY_SOCKET": str(d / "run"),
            "NVA_AGENT_FRR_RUNDIR": str(d / "run"),
        }
        relay = None
        if report_to is not None:
            parts = urllib.parse.urlsplit(report_to)
            if parts.hostname != "127.0.0.1" or parts.port is None:
                raise LabError(f"report_to must be http://127.0.0.1:PORT/... on the host, not {report_to}")
            relay = HostRelay(self.ns("nva"), parts.port)
            query = f"?{parts.query}" if parts.query else ""
            env["NVA_AGENT_REPORT_URL"] = relay.url(parts.path + query)
            env["NVA_AGENT_REPORT_IP"] = self.addr.nva_ip
        if "NVA_AGENT_TOKEN_FILE" not in (extra_env or {}):
            env["NVA_AGENT_TOKEN"] = token
        if not lab_mode:
            policy_path = self.work / f"agent-policy-{port}.yaml"
            policy_path.write_text(lab_policy(self.addr) if policy is None else policy)
            policy_path.chmod(0o644)
            env["NVA_AGENT_POLICY_FILE"] = str(policy_path)
        env.update(extra_env or {})
        log_path = self.work / f"agent-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns("nva"),
                    sys.executable,
                    "-m",
                    "nva_agent",
                    "--listen-fd",
                    str(sock.fileno()),
                    *(["--lab"] if lab_mode else []),
                ],
                pass_fds=(sock.fileno(),),
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        sock.close()  # the agent holds its own copy
        agent = AgentProcess(proc=proc, url=f"{scheme}://127.0.0.1:{port}", token=token, log_path=log_path, relay=relay)
        self.agents.append(agent)

        def ready() -> bool:
            if proc.poll() is not None:
                raise LabError(f"agent exited with {proc.returncode}:\n{agent.log()}")
            try:
                verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else False
                if client_cert and isinstance(verify, ssl.SSLContext):
                    verify.load_cert_chain(*client_cert)
                return httpx.get(f"{agent.url}/v1/health", timeout=1, verify=verify).status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, "the agent to answer /v1/health", interval=0.05)
        return agent


# ----------------------------------------------------------------------------- CLI ----------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="arsrlab", help="namespace prefix (default arsrlab)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    # `timeout` (scripts/frr-lab.sh) sends SIGTERM: make it unwind through up()'s teardown
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lab = FrrLab(name=args.name)
    try:
        if args.action == "up":
            t0 = time.monotonic()
            lab.up(timeout=args.timeout)
            print(f"frr-lab: up in {time.monotonic() - t0:.2f} s; workdir {lab.work}")
            print(f"frr-lab: talk to the NVA with: {' '.join(lab.vtysh_args('nva'))} -c 'show bgp summary json'")
        elif args.action == "down":
            lab.down()
            print("frr-lab: down")
        else:
            print(json.dumps(lab.status(), indent=2))
    except LabUnavailable as exc:
        print(f"frr-lab: unavailable: {exc}", file=sys.stderr)
        return 77
    except (LabError, subprocess.SubprocessError, OSError) as exc:
        print(f"frr-lab: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
