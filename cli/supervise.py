"""``pixfleet run``: migrate, create a demo key, start the edge and both pools, run a demo job,
and supervise them in the foreground. Ctrl-C (or SIGTERM) stops them all cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from cli.demo import run_demo, wait_ready


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"starting {name}: pixfleet {' '.join(args)}", flush=True)
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env=env)


def _stop(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 40.0) -> int:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    worst = 0
    for name, proc in procs.items():
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        print(f"{name} exited with {code}", flush=True)
        worst = worst or (code if code not in (0, -signal.SIGTERM) else 0)
    return worst


def run_stack(port: int = 8000, demo: bool = True) -> int:
    """Run the whole stack until interrupted; return the exit status."""
    from cli.main import main as command

    env = dict(os.environ)
    env.setdefault("PIXFLEET_PORT", str(port))
    env.setdefault("PIXFLEET_STORE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    command(["migrate"])
    key = asyncio.run(_demo_key())
    procs = {
        "edge": _spawn("edge", ["edge", "--port", str(port)], env),
        "standard": _spawn("standard pool", ["worker", "--pool", "standard"], env),
        "heavy": _spawn("heavy pool", ["worker", "--pool", "heavy", "--slots", "1"], env),
    }
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        print(f"\npixfleet is up at {base} (OpenAPI: {base}/schema)")
        print(f"API key (owner 'demo'): {key}\n", flush=True)
        if demo:
            summary = run_demo(base, key)
            print(
                f"demo job {summary['job']} COMPLETED in {summary['seconds']} s: "
                f"{summary['result']} ({summary['media_type']}, {summary['bytes']} bytes) "
                f"from {base}{summary['href']}",
                flush=True,
            )
        print("Ctrl-C stops the stack.", flush=True)
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited unexpectedly ({proc.returncode}); stopping", flush=True)
                    stopping = True
            time.sleep(0.5)
    except Exception as e:
        print(f"pixfleet run failed: {e}", file=sys.stderr, flush=True)
        _stop(procs)
        return 1
    print("\nstopping...", flush=True)
    return _stop(procs)


async def _demo_key() -> str:
    import asyncpg

    from contracts.settings import PostgresSettings, load_settings
    from pixfleet.registry.keys import create_key

    pg = load_settings(PostgresSettings, os.environ, "PIXFLEET_POSTGRES_")
    conn = await asyncpg.connect(pg.dsn.reveal())
    try:
        return await create_key(conn, "demo", "pixfleet run")
    finally:
        await conn.close()
