"""Sample a process with py-spy and summarise where its (non-idle) time goes.

    python loadtests/pyspy.py /tmp/worker.txt [--top 25]   # summarise a raw profile

``record`` starts ``py-spy record --format raw`` (collapsed stacks, one line per stack and
its sample count); ``top_frames`` folds line numbers away and ranks functions by the
samples they were on top of the stack (self) and, for pixfleet's own code, anywhere in it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
_LINE = re.compile(r":\d+\)$")
OWN = ("pixfleet/", "worker/", "contracts/", "edge/")


def record(pid: int, out: Path, duration: int, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``duration`` seconds into ``out`` (collapsed stacks)."""
    return subprocess.Popen(
        [
            BIN / "py-spy", "record", "--pid", str(pid), "--duration", str(duration),
            "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frame(frame: str) -> str:
    """``name (pkg/file.py:123)`` -> ``name (pkg/file.py)`` (py-spy paths are relative to
    ``sys.path``)."""
    return _LINE.sub(")", frame.strip())


def top_frames(path: Path, top: int = 20) -> dict[str, object]:
    """Samples, the ``top`` functions by self share of the samples (any code), and the
    ``top`` functions of pixfleet's own packages by total share (anywhere on the stack).
    Samples are of non-idle threads: time blocked in a syscall such as ``fsync`` counts."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            if f.partition(" (")[2].startswith(OWN):
                total[f] += n

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / max(samples, 1), 1)) for f, n in c.most_common(top)]

    return {"samples": samples, "self_pct": share(own), "own_code_total_pct": share(total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    summary = top_frames(args.profile, args.top)
    print(f"{summary['samples']} samples")
    for title in ("self_pct", "own_code_total_pct"):
        print(f"-- {title}")
        for frame, pct in summary[title]:  # type: ignore[attr-defined]
            print(f"{pct:6.1f}  {frame}")


if __name__ == "__main__":
    main()
