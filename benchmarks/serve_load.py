"""Bounded loopback load test of ``deepmsi serve``: concurrent clients posting a real clip.

Starts the server as a subprocess on a free 127.0.0.1 port, waits for ``/health``, then
``--clients`` threads send ``--requests`` POST /predict in total (a fixed number: the test stops
by itself, and a global ``--timeout`` kills everything if it does not). Reports throughput, p50 /
p95 / max latency, the error count, whether ``/health`` still answers, and the server's resident
memory (VmRSS) before, at the peak and after.

    .venv/bin/python benchmarks/serve_load.py --run demo-out/run [--clients 20] [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips" / "video"
DEFAULT_CLIP = "Ses01F_impro02_M005.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB (Linux /proc)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(k) for k in kids]


def start_server(run: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deepmsi", "serve", "--run", str(run), "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not become healthy in time")


def load(url: str, clip: Path, clients: int, requests: int, pid: int) -> dict:
    import httpx

    data = clip.read_bytes()
    latencies: list[float] = []
    errors: list[str] = []
    peak = [rss_mb(pid)]
    lock = threading.Lock()
    todo = iter(range(requests))
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    r = http.post(url + "/predict", files={"file": (clip.name, data, "video/mp4")})
                    ok = r.status_code == 200 and "label" in r.json()
                    err = None if ok else f"HTTP {r.status_code}: {r.text[:100]}"
                except httpx.HTTPError as e:
                    err = f"{type(e).__name__}: {e}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if err:
                        errors.append(err)

    def sample_memory() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    health_during = None
    time.sleep(1.0)
    try:
        h0 = time.perf_counter()
        health_during = httpx.get(url + "/health", timeout=10).status_code == 200
        health_ms = 1000 * (time.perf_counter() - h0)
    except httpx.HTTPError:
        health_during, health_ms = False, None
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))]

    return {
        "requests": len(lat),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": wall,
        "throughput_rps": len(lat) / wall,
        "p50_s": pct(0.50),
        "p95_s": pct(0.95),
        "max_s": lat[-1],
        "health_during_load": health_during,
        "health_during_load_ms": health_ms,
        "rss_peak_mb": peak[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder")
    parser.add_argument("--clip", type=Path, help=f"clip to post (default {DEFAULT_CLIP})")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900, help="kill everything after this")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    args = parser.parse_args()
    clip = args.clip or CLIPS / DEFAULT_CLIP
    if not clip.is_file():
        sys.exit(f"clip not found: {clip} (pass --clip)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.run, port)
    killer = threading.Timer(args.timeout, lambda: os._exit(3))  # the bound, whatever happens
    killer.daemon = True
    killer.start()
    try:
        wait_healthy(url, proc, timeout=180)
        import httpx

        httpx.post(url + "/predict", files={"file": (clip.name, clip.read_bytes())}, timeout=300)
        rss_before = rss_mb(proc.pid)  # warm: after one request
        result = load(url, clip, args.clients, args.requests, proc.pid)
        result["rss_before_mb"] = rss_before
        result["rss_after_mb"] = rss_mb(proc.pid)
        result["server_alive"] = proc.poll() is None
        result["health_after"] = httpx.get(url + "/health", timeout=10).status_code == 200
        result |= {"clients": args.clients, "clip": clip.name}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        killer.cancel()
    if args.record:
        _record(result)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"serve load test: {args.clients} concurrent clients, {result['requests']} requests of "
        f"{clip.name} over loopback"
    )
    print(
        f"  throughput      {result['throughput_rps']:.2f} requests/s "
        f"({result['wall_s']:.1f} s wall)"
    )
    print(
        f"  latency         p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s, "
        f"max {result['max_s']:.2f} s"
    )
    print(f"  errors          {result['errors']} {result['first_errors'] or ''}")
    hms = result["health_during_load_ms"]
    print(
        f"  /health under load: {result['health_during_load']}"
        + (f" ({hms:.0f} ms)" if hms is not None else "")
    )
    print(
        f"  server RSS      before {result['rss_before_mb']:.0f} MB, peak "
        f"{result['rss_peak_mb']:.0f} MB, after {result['rss_after_mb']:.0f} MB; "
        f"alive after: {result['server_alive']}"
    )


def _record(result: dict) -> None:
    from results import Row, command_line, record

    where = f"{result['clients']} concurrent clients, {result['requests']} x {result['clip']}"
    rss = (
        f"{result['rss_before_mb']:.0f} MB before, {result['rss_peak_mb']:.0f} MB peak, "
        f"{result['rss_after_mb']:.0f} MB after"
    )
    note = (
        f"{result['errors']} errors; server alive after: {result['server_alive']}; RSS "
        f"{rss}; load average {os.getloadavg()[0]:.1f}"
    )
    record(
        [
            Row(
                "speed.serve.throughput",
                where,
                "tav",
                "requests_per_second",
                round(result["throughput_rps"], 2),
                command_line(),
                note=note,
            ),
            Row(
                "speed.serve.p95_latency",
                where,
                "tav",
                "seconds",
                round(result["p95_s"], 2),
                command_line(),
                note=note,
            ),
        ]
    )


if __name__ == "__main__":
    main()
