"""CPU and memory of processes, read from /proc (Linux; no psutil).

CPU of a process tree is counted so that nothing is lost when children exit: the live
processes' own ``utime + stime`` plus the parent's ``cutime + cstime`` (what its reaped
children used). A delta of two ``TreeCpu`` readings is the tree's CPU in between, including
children that started or were replaced (a slot recycled after N jobs) meanwhile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICES = {
    "postgres": ("postgres",),
    "rabbitmq": ("beam.smp",),
    "redis": ("redis-server",),
    "k6": ("k6",),
}


def _stat(pid: int) -> tuple[str, list[str]]:
    """(comm, fields after the comm) of /proc/<pid>/stat; fields[0] is the state."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids = [pid]
    for child in children(pid):
        pids.extend(tree(child))
    return pids


def own_cpu(pid: int) -> float:
    """utime + stime of one process, seconds (0 if it is gone)."""
    try:
        fields = _stat(pid)[1]
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reaped_cpu(pid: int) -> float:
    """cutime + cstime of one process: what its waited-for children used, seconds."""
    try:
        fields = _stat(pid)[1]
    except (OSError, IndexError):
        return 0.0
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """CPU of the live tree under ``pid`` (processes that exited are not counted)."""
    return sum(own_cpu(p) for p in tree(pid))


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class TreeCpu:
    """One reading of a worker-like tree: the parent, its live children, what was reaped."""

    parent: float
    reaped: float
    live: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (kind, seconds)

    @classmethod
    def read(cls, pid: int) -> TreeCpu:
        slots = set(slot_pids(pid))
        servers = fork_servers(pid)
        live = {}
        for p in tree(pid)[1:]:
            live[p] = ("slot" if p in slots else "other", own_cpu(p))
        # Slot children forked by a fork server are reaped by it, not by the worker.
        reaped = reaped_cpu(pid) + sum(reaped_cpu(p) for p in servers)
        return cls(parent=own_cpu(pid), reaped=reaped, live=live)

    def minus(self, before: TreeCpu) -> dict[str, float]:
        """CPU seconds in between: parent, slot children (live and reaped), other children,
        and how many slot processes were seen (a recycled slot adds one)."""
        slots = other = 0.0
        for p, (kind, seconds) in self.live.items():
            spent = seconds - before.live.get(p, (kind, 0.0))[1]
            if kind == "slot":
                slots += spent
            else:
                other += spent
        # A child that died in between: its whole life is in ``reaped``; take back what it
        # had used before the window (counted in ``before``).
        gone = sum(s for p, (_, s) in before.live.items() if p not in self.live)
        slots += self.reaped - before.reaped - gone
        seen = {p for p, (k, _) in [*self.live.items(), *before.live.items()] if k == "slot"}
        return {
            "parent": self.parent - before.parent,
            "slots": slots,
            "other_children": other,
            "slot_processes": float(len(seen)),
        }


def fork_servers(pid: int) -> list[int]:
    """The multiprocessing fork servers among the children of ``pid``."""
    return [p for p in children(pid) if "forkserver" in _cmdline(p)]


def slot_pids(pid: int) -> list[int]:
    """A worker's slot children: spawned by it, or forked by its fork server."""
    spawned = [p for p in children(pid) if "spawn_main" in _cmdline(p)]
    return spawned + [c for server in fork_servers(pid) for c in children(server)]


def service_cpu(database: str | None = None) -> dict[str, float]:
    """CPU seconds so far of the processes of each backing service (and k6), by name.

    With ``database``, ``postgres_db`` also counts PostgreSQL's own processes plus the
    backends connected to that database only (others' tests may load the same server).
    """
    out = dict.fromkeys(SERVICES, 0.0)
    if database:
        out["postgres_db"] = 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            comm, fields = _stat(int(p.name))
        except (OSError, ValueError, IndexError):
            continue
        for name, comms in SERVICES.items():
            if any(comm.startswith(c) for c in comms):
                seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
                out[name] += seconds
                if name == "postgres" and database:
                    cmd = _cmdline(int(p.name))
                    if "(" not in cmd or f" {database} " in cmd:  # auxiliary or ours
                        out["postgres_db"] += seconds
    return out


def total_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))
    return busy / CLK_TCK
