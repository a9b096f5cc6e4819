"""CPU time per process kind over a stretch of a benchmark, read from /proc (Linux).

Every process on the machine is counted (the broker, PostgreSQL's backends under their own account,
each service, the load generator), grouped by what it is, so a run can say where each message's CPU
goes: `with CpuMeter() as cpu: ...; cpu.report(messages)`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def kind(pid: str) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return None
    exe = os.path.basename(words[0])
    if exe == "tansu" or "tansu" in words[0]:
        return "broker (tansu)"
    if exe.startswith("postgres"):
        return "postgresql"
    if exe.startswith("python") and "-m" in words:
        module = words[words.index("-m") + 1]
        return module.removeprefix("services.")
    if exe.startswith("python") and int(pid) == os.getpid():
        return "load generator"
    return None


def sample() -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU seconds so far) for every process of interest."""
    out: dict[int, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (name := kind(pid)) is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)  # utime + stime
    return out


class CpuMeter:
    def __enter__(self) -> CpuMeter:
        self.before = sample()
        self.wall = os.times().elapsed
        return self

    def __exit__(self, *exc: object) -> None:
        self.after = sample()
        self.wall = os.times().elapsed - self.wall

    def by_kind(self) -> dict[str, float]:
        used: dict[str, float] = defaultdict(float)
        for pid, (name, total) in self.after.items():
            used[name] += total - self.before.get(pid, (name, 0.0))[1]  # processes born meanwhile count whole
        return dict(used)

    def report(self, messages: int, indent: str = "  ") -> str:
        used = self.by_kind()
        total = sum(used.values())
        lines = [
            f"{indent}CPU over {self.wall:.1f} s: {total / self.wall * 100:.0f}% of one core "
            f"({os.cpu_count()} cores), {total / max(messages, 1) * 1000:.2f} ms per message"
        ]
        for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"{indent}  {name:<22} {seconds / self.wall * 100:5.0f}%   "
                f"{seconds / max(messages, 1) * 1000:6.2f} ms/message"
            )
        return "\n".join(lines)


# --- One process tree (a stack started as one process, e.g. `python -m devstack.local`) ----------------


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> set[int]:
    """`root` and every process below it (by parent pid), as /proc has them now."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (fields := stat_fields(int(pid))) is not None:
            children[int(fields[1])].append(int(pid))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def tree_sample(root: int, name: Callable[[int], str]) -> dict[int, tuple[str, float]]:
    """pid -> (name(pid), CPU seconds) for `root` and its descendants. Each process counts its own time
    and that of its children it has reaped (cutime + cstime): a PostgreSQL backend that exits between
    two samples still counts, in its postmaster's figure, and summing over the tree counts every
    process once."""
    out: dict[int, tuple[str, float]] = {}
    for pid in descendants(root):
        fields = stat_fields(pid)
        if fields is not None:
            out[pid] = (name(pid), sum(int(f) for f in fields[11:15]) / TICK)
    return out


def tree_by_name(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per name between two tree samples (a process born meanwhile counts whole)."""
    used: dict[str, float] = defaultdict(float)
    for name, total in after.values():
        used[name] += total
    for name, total in before.values():
        used[name] -= total
    return dict(used)
