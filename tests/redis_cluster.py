"""A real Redis Cluster on this machine: 3 masters and 3 replicas, for L2 cluster tests.

Six ``redis-server --cluster-enabled yes`` processes (no persistence), each on
its own free port (its cluster bus on port + 10000) in its own directory, joined
by ``redis-cli --cluster create … --cluster-replicas 1 --cluster-yes``. A short
``cluster-node-timeout`` (1 s) makes a killed master fail over to its replica
in a few seconds rather than the default 15+.

Helpers read the cluster's own view (``CLUSTER NODES``/``CLUSTER INFO``/
``INFO replication``): which master owns a key's slot, kill a master by PID,
wait until its replica has taken over, restart a killed node (it rejoins as a
replica of whoever owns its slots now), and wait until replicas have every write.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from binaries import find_binary, missing
from processes import (
    RunAs,
    ServerProcess,
    free_port_pair,
    make_owned_dir,
    run_command,
    server_user,
    servers_tempdir,
    wait_for,
)
from redis.crc import key_slot
from redis.exceptions import RedisError

__all__ = ["ClusterNodeView", "RedisClusterServers", "RedisNode"]

BUS_OFFSET = 10000  # Redis Cluster's default: the bus listens on port + 10000
NODE_TIMEOUT_MS = 1000
STATE_TIMEOUT = 30.0


def _binary(names: tuple[str, ...], package: str) -> Path:
    for name in names:
        found = find_binary(name)
        if found is not None:
            return found
    missing(f"{names[0]} not found: install the OS package {package!r} (apt-get install {package})")


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``, as one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link_state: str
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        fields = line.split()
        address = fields[1].split("@")[0]
        slots: list[tuple[int, int]] = []
        for entry in fields[8:]:
            if entry.startswith("["):  # a slot being migrated: not owned yet
                continue
            lo, _, hi = entry.partition("-")
            slots.append((int(lo), int(hi or lo)))
        return cls(
            node_id=fields[0],
            port=int(address.rpartition(":")[2]),
            flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3],
            link_state=fields[7],
            slots=tuple(slots),
        )


class RedisNode:
    """One cluster member: a ``redis-server`` child process on 127.0.0.1:``port``."""

    def __init__(self, index: int, binary: Path, base: Path, run_as: RunAs | None) -> None:
        self.index = index
        self.port = free_port_pair(BUS_OFFSET)
        self.dir = make_owned_dir(base / f"node{index}", run_as, 0o755)
        args: list[str | os.PathLike[str]] = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
            "--repl-diskless-sync-delay", "0",  # a (re)joining replica syncs at once, not in 5 s
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = ServerProcess(
            f"redis-{self.port}", args, self.dir, run_as=run_as, stop_signal=signal.SIGTERM
        )

    def __repr__(self) -> str:
        return f"<RedisNode {self.port} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> aioredis.Redis:
        """A plain (non-cluster) client of this one node; ``aclose()`` it."""
        return aioredis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2.0
        )

    async def command(self, *args: str | int) -> object:
        client = self.client()
        try:
            reply: object = await client.execute_command(*args)  # type: ignore[no-untyped-call]
            return reply
        finally:
            await client.aclose()

    async def answers(self) -> bool:
        try:
            return bool(await self.command("PING"))
        except (OSError, RedisError):
            return False

    async def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a dict of strings."""
        raw = await self.command("CLUSTER", "INFO")
        pairs = (line.partition(":") for line in str(raw).splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, _, v in pairs}

    async def replication_info(self) -> dict[str, Any]:
        """``INFO replication``, parsed by redis-py (``slave0`` etc. are dicts)."""
        client = self.client()
        try:
            return dict(await client.info("replication"))
        finally:
            await client.aclose()

    async def view(self) -> list[ClusterNodeView]:
        """The cluster as this node sees it (``CLUSTER NODES``)."""
        raw = await self.command("CLUSTER", "NODES")
        return [ClusterNodeView.parse(line) for line in str(raw).splitlines() if line.strip()]

    async def node_id(self) -> str:
        return str(await self.command("CLUSTER", "MYID"))


class RedisClusterServers:
    """Six ``redis-server`` processes joined into one cluster (3 masters, 3 replicas).

    ``nodes`` are all members, whatever their current role; ``seed_url`` is one
    node's URL (redis-py's ``RedisCluster.from_url`` discovers the rest);
    ``startup_seconds`` records the start-up steps.
    """

    def __init__(
        self, base: Path, nodes: list[RedisNode], masters: int, cli: Path, run_as: RunAs | None
    ) -> None:
        self.base = base
        self.nodes = nodes
        self.master_count = masters
        self.cli = cli
        self.run_as = run_as
        self.startup_seconds: dict[str, float] = {}

    @property
    def seed_url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    async def start(cls, masters: int = 3, replicas_per_master: int = 1) -> RedisClusterServers:
        """Start the servers, create the cluster, wait until every node says ``ok``.

        Skips (fails under ``CI=true``) without ``redis-server``/``redis-cli``
        (``valkey-server``/``valkey-cli`` do as well).
        """
        server = _binary(("redis-server", "valkey-server"), "redis-server")
        cli = _binary(("redis-cli", "valkey-cli"), "redis-tools")
        run_as = server_user()
        base = servers_tempdir("entitlements-redis-cluster-")
        count = masters * (1 + replicas_per_master)
        nodes = [RedisNode(i, server, base, run_as) for i in range(count)]
        cluster = cls(base, nodes, masters, cli, run_as)
        try:
            await cluster._create(replicas_per_master)
        except BaseException:
            await cluster.close()
            raise
        return cluster

    async def _create(self, replicas_per_master: int) -> None:
        t = time.monotonic()
        for node in self.nodes:
            node.process.start()
        for node in self.nodes:
            await wait_for(node.answers, f"{node}", timeout=10, alive=[node.process])
        self.startup_seconds["servers"] = time.monotonic() - t
        t = time.monotonic()
        await asyncio.to_thread(
            run_command,
            [
                self.cli, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(replicas_per_master), "--cluster-yes",
            ],
            run_as=self.run_as,
            cwd=self.base,
            timeout=60,
        )  # fmt: skip
        self.startup_seconds["cluster create"] = time.monotonic() - t
        self.startup_seconds["cluster ok"] = await self.wait_healthy()

    async def close(self) -> None:
        """Stop every node by PID and remove their directories."""
        await asyncio.gather(*(asyncio.to_thread(n.process.stop) for n in self.nodes))
        await asyncio.to_thread(shutil.rmtree, self.base, True)

    # --- the cluster's view ----------------------------------------------------------

    def running_nodes(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.running]

    def node_at(self, port: int) -> RedisNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    async def view(self) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` from the first running node that answers."""
        for node in self.running_nodes():
            try:
                return await node.view()
            except (OSError, RedisError):
                continue
        raise RuntimeError("no cluster node answers")

    async def masters(self) -> list[RedisNode]:
        """Current masters that own slots and are not failed."""
        return [
            self.node_at(v.port)
            for v in await self.view()
            if v.is_master and v.slots and not v.failed
        ]

    async def replicas(self) -> list[RedisNode]:
        return [self.node_at(v.port) for v in await self.view() if not v.is_master and not v.failed]

    async def master_for_slot(self, slot: int) -> RedisNode:
        for v in await self.view():
            if v.is_master and not v.failed and v.owns(slot):
                return self.node_at(v.port)
        raise LookupError(f"no live master owns slot {slot}")

    async def master_for_key(self, key: str | bytes) -> RedisNode:
        """The master that serves ``key`` now (by its hash slot)."""
        raw = key.encode() if isinstance(key, str) else key
        return await self.master_for_slot(key_slot(raw))

    # --- waiting ---------------------------------------------------------------------

    async def _all_ok(self) -> bool:
        expected = len(self.nodes)
        for node in self.running_nodes():
            try:
                info = await node.cluster_info()
            except (OSError, RedisError):
                return False
            if info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) != expected:
                return False
        return True

    async def wait_ok(self, timeout: float = STATE_TIMEOUT) -> float:
        """Wait until every running node reports ``cluster_state:ok`` and knows every node."""
        return await wait_for(
            self._all_ok, "cluster_state:ok on every node", timeout=timeout, interval=0.05
        )

    async def _whole(self) -> bool:
        """Every node runs, and every node sees every other connected, none failed."""
        if len(self.running_nodes()) != len(self.nodes):
            return False
        for node in self.nodes:
            try:
                views = await node.view()
            except (OSError, RedisError):
                return False
            if any(v.failed or v.link_state != "connected" for v in views):
                return False
            if sum(1 for v in views if v.is_master and v.slots) != self.master_count:
                return False
            if sum(1 for v in views if not v.is_master) != len(self.nodes) - self.master_count:
                return False
        return True

    async def _healthy(self) -> bool:
        return await self._whole() and await self._all_ok() and await self._replicas_synced()

    async def wait_healthy(self, timeout: float = STATE_TIMEOUT) -> float:
        """Wait until the cluster is whole again: every node up and seen by all, none
        failed, the right number of masters and replicas, ``ok`` everywhere, and every
        replica online with all of its master's writes."""
        return await wait_for(
            self._healthy, "the whole cluster to be healthy", timeout=timeout, interval=0.05
        )

    async def _replicas_synced(self) -> bool:
        try:
            for master in await self.masters():
                info = await master.replication_info()
                offset = info.get("master_repl_offset")
                links = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
                if not links:
                    return False
                for link in links:
                    if link.get("state") != "online" or link.get("offset") != offset:
                        return False
        except (OSError, RedisError, LookupError, RuntimeError):
            return False
        return True

    async def wait_replicas_synced(self, timeout: float = STATE_TIMEOUT) -> float:
        """Wait until every master has a replica online with all of its writes.

        Call it before killing a master when the test needs the writes made so
        far to survive the failover (replication is asynchronous: a write the
        replica has not received is lost with its master, as in production).
        """
        return await wait_for(
            self._replicas_synced,
            "every master's replicas to be online and in sync",
            timeout=timeout,
            interval=0.05,
        )

    # --- faults -----------------------------------------------------------------------

    async def kill(self, node: RedisNode) -> None:
        """SIGKILL one node by PID, as a crash would, and reap it."""
        await asyncio.to_thread(node.process.kill)

    async def kill_master_for_key(self, key: str | bytes) -> RedisNode:
        """Kill the master that serves ``key`` now; return it (dead)."""
        master = await self.master_for_key(key)
        await self.kill(master)
        return master

    async def wait_failover(self, dead: RedisNode, timeout: float = STATE_TIMEOUT) -> RedisNode:
        """Wait until ``dead``'s slots belong to a live master and the cluster is ``ok``.

        Returns the new master (``dead``'s former replica).
        """
        started = time.monotonic()
        before = {v.port: v for v in await self.view()}
        slots = before[dead.port].slots if dead.port in before else ()
        if not slots:
            raise ValueError(f"{dead} owned no slots: nothing to fail over")
        promoted: list[RedisNode] = []

        async def taken_over() -> bool:
            try:
                views = await self.view()
            except RuntimeError:
                return False
            owners = [v for v in views if v.is_master and not v.failed and v.owns(slots[0][0])]
            dead_view = [v for v in views if v.port == dead.port]
            if not owners or owners[0].port == dead.port:
                return False
            if not dead_view or "fail" not in dead_view[0].flags:
                return False
            promoted[:] = [self.node_at(owners[0].port)]
            return await self._all_ok()

        await wait_for(
            taken_over,
            f"a replica to take over {dead}'s slots",
            timeout=max(0.0, timeout - (time.monotonic() - started)),
            interval=0.05,
        )
        return promoted[0]

    async def restart(self, node: RedisNode, timeout: float = STATE_TIMEOUT) -> float:
        """Start a stopped node again (same port and nodes.conf): it rejoins the cluster,
        as a replica if its slots were taken over meanwhile. Waits until the cluster is
        ``ok`` (and whole, when this was the last node down)."""
        started = time.monotonic()
        node.process.start()
        await wait_for(node.answers, f"{node}", timeout=10, alive=[node.process])
        if len(self.running_nodes()) == len(self.nodes):
            await self.wait_healthy(timeout)
        else:
            await self.wait_ok(timeout)
        return time.monotonic() - started

    async def reset(self) -> None:
        """Back to normal for the next test: every node running, the cluster whole and
        ``ok``, replicas in sync (which nodes are masters may have changed)."""
        for node in self.nodes:
            if not node.running:
                node.process.start()
        await self.wait_healthy()
