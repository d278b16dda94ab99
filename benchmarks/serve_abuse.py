"""``deepmsi serve`` under abuse: concurrent real clips, a 200 MB body, malformed requests.

Starts the server as a subprocess on a free 127.0.0.1 port (its own TMPDIR, stderr kept), with
``--run`` or, without one, a tiny run trained here on the synthetic corpus (the recipe of
tests/helpers_inference.py; the model is small, so latency measures the service, not the model).
Then, in turn:

1. ``--clients`` threads each post ``--rounds`` real IEMOCAP clips with their transcripts
   (a different clip per request): errors, p50 / p95 / max latency, peak server RSS;
2. a ``--big-mb`` body to a server whose limit is ``--limit-mb``, once with Content-Length and once
   chunked, then a junk file just under the limit (read whole: spooled to disk, refused as not
   media), sent over a raw socket while the server's RSS is sampled from /proc every 10 ms: the
   status, how many bytes went out before the answer, the RSS growth;
3. a list of malformed requests (empty body, wrong field, a text file named .mp4, ``../../x.mp4``,
   a 100 kB text field...): each must be a 4xx with a one-line body;
4. ``--max-connections`` + 8 clients that stall mid-upload: new clients get a 503, not a hang,
   and the server answers again once they go;
5. the server's TMPDIR must be empty and no upload left open, and its stderr free of tracebacks.

    .venv/bin/python benchmarks/serve_abuse.py [--run RUN] [--clients 20] [--rounds 5] [--record]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serve_load import free_port, rss_mb, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips"
BOUNDARY = "deepmsi-abuse"


def tiny_run(folder: Path) -> Path:
    """A tiny trained run, made the way the tests make theirs."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers_inference import build_tiny_run

    return build_tiny_run(folder).run_dir


def real_clips() -> list[tuple[Path, str]]:
    with (CLIPS / "labels.csv").open(newline="") as f:
        return [(CLIPS / r["file"], r["transcript"]) for r in csv.DictReader(f)]


def start_server(
    run: Path, port: int, limit_mb: float, max_connections: int, tmp: Path
) -> subprocess.Popen:
    """The server on 127.0.0.1:port with TMPDIR=tmp/uploads; stderr goes to tmp/stderr.txt."""
    (tmp / "uploads").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp / "uploads"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deepmsi", "serve", "--run", str(run), "--port", str(port)]
    cmd += ["--max-upload-mb", str(limit_mb), "--max-connections", str(max_connections)]
    stderr = (tmp / "stderr.txt").open("w")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env, text=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Sampler:
    """Peak RSS of a process, sampled every ``every`` seconds in a thread while in use."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every, self.peak = pid, every, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def concurrency(url: str, pid: int, clips: list[tuple[Path, str]], clients: int, rounds: int):
    """``clients`` threads, each posting ``rounds`` clips in turn (request i gets clip i)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for r in range(rounds):
                clip, text = clips[(r * clients + k) % len(clips)]
                files = {"file": (clip.name, clip.read_bytes(), "video/mp4")}
                t0 = time.perf_counter()
                try:
                    resp = http.post(url + "/predict", files=files, data={"transcript": text})
                    err = None if resp.status_code == 200 else f"{resp.status_code} {resp.text}"
                except httpx.HTTPError as e:
                    err = f"{type(e).__name__}: {e}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if err:
                        errors.append(err[:200])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    with Sampler(pid, every=0.2) as rss:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": time.perf_counter() - t0,
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies),
        "rss_peak_mb": rss.peak,
    }


def _request_head(port: int, declared: int | None) -> bytes:
    length = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    lines = [
        "POST /predict HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        length,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _body(total: int):
    """A ``total``-byte multipart body of one file field, in pieces of 256 kB."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    yield head
    left, piece = total - len(head) - len(tail), bytes(256 * 1024)
    while left > 0:
        yield piece[: min(left, len(piece))]
        left -= len(piece)
    yield tail


def send_big(port: int, total: int, *, chunked: bool) -> dict:
    """Send a ``total``-byte multipart body over a raw socket, stopping as soon as an answer
    comes (a server that refuses early closes the connection); counts the body bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(_request_head(port, None if chunked else total))
    sent, note = 0, b""
    t0 = time.perf_counter()
    try:
        for piece in _body(total):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n" if chunked else b"")
    except OSError as err:  # the server closed the connection: what did it answer before?
        note = f"({type(err).__name__} while sending)".encode()
    answer = _read_answer(sock) or note
    sock.close()
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return {"status_line": status_line, "sent_mb": sent / 2**20, "s": time.perf_counter() - t0}


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(30)
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    except OSError:
        pass
    return data


def oversized(port: int, pid: int, big_mb: float, limit_mb: float) -> dict:
    """The big body twice, declared and chunked, then a body just under the limit (read whole,
    spooled to disk, refused as not media); the RSS growth is the peak over the three minus the
    RSS before."""
    before = rss_mb(pid)
    with Sampler(pid) as rss:
        declared = send_big(port, int(big_mb * 2**20), chunked=False)
        chunked = send_big(port, int(big_mb * 2**20), chunked=True)
        under = send_big(port, int(0.9 * limit_mb * 2**20), chunked=False)
    return {
        "body_mb": big_mb,
        "declared": declared,
        "chunked": chunked,
        "under_limit": under,
        "rss_before_mb": before,
        "rss_peak_mb": rss.peak,
        "rss_growth_mb": rss.peak - before,
    }


def bad_requests(clip: bytes) -> list[tuple[str, dict]]:
    """(what, httpx request arguments) for requests a client gets wrong or an attacker crafts."""
    mp = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    text_as_mp4 = b"this is a text file, not a video\n" * 50
    bad_srt = ("s.srt", b"1\n00:00:01,000 --> 00:00:xx,000\nhi\n")
    return [
        ("empty body", {}),
        ("empty multipart body", {"headers": mp, "content": b""}),
        ("multipart without a boundary", {"headers": {"content-type": "multipart/form-data"}}),
        ("JSON instead of a form", {"json": {"transcript": "hi"}}),
        ("wrong field name", {"files": {"video": ("clip.mp4", clip, "video/mp4")}}),
        ("unknown text field", {"data": {"transcript": "hi", "lang": "en"}}),
        ("text file named .mp4", {"files": {"file": ("notes.mp4", text_as_mp4, "video/mp4")}}),
        ("random bytes named .mp4", {"files": {"file": ("noise.mp4", os.urandom(65536))}}),
        ("empty file", {"files": {"file": ("empty.mp4", b"")}}),
        ("truncated clip", {"files": {"file": ("cut.mp4", clip[: len(clip) // 3])}}),
        ("path traversal name", {"files": {"file": ("../../x.mp4", clip, "video/mp4")}}),
        ("absolute path name", {"files": {"file": ("/etc/x.mp4", clip, "video/mp4")}}),
        ("Windows path name", {"files": {"file": ("..\\..\\x.mp4", clip, "video/mp4")}}),
        ("100 kB text field", {"data": {"transcript": "a" * 100_000}}),
        ("12,000-character transcript", {"data": {"transcript": "word " * 2400}}),
        ("transcript sent as a file", {"files": {"transcript": ("t.txt", b"hello")}}),
        ("file field sent as text", {"data": {"file": "clip.mp4"}}),
        ("two files in one field", {"files": [("file", ("a.mp4", clip)), ("file", ("b", clip))]}),
        ("window not a number", {"data": {"transcript": "hi", "window": "abc"}}),
        ("window out of range", {"data": {"transcript": "hi", "window": "1e9"}}),
        ("malformed subtitles", {"files": {"file": ("c.mp4", clip), "subtitles": bad_srt}}),
        ("too many fields", {"data": {f"f{i}": "x" for i in range(20)}}),
    ]


def check_bad_requests(url: str, clip: bytes) -> list[dict]:
    """Each malformed request: its status, whether that is a 4xx (the truncated clip may also be
    a 200: a prefix of an mp4 can still decode) and whether the body is one line."""
    import httpx

    out = []
    with httpx.Client(timeout=120) as http:
        for what, kwargs in bad_requests(clip):
            resp = http.post(url + "/predict", **kwargs)
            allowed = resp.status_code == 200 and what == "truncated clip"
            out.append(
                {
                    "what": what,
                    "status": resp.status_code,
                    "ok": allowed or 400 <= resp.status_code < 500,
                    "one_line": "\n" not in resp.text.strip(),
                    "body": resp.text[:160],
                }
            )
        out.append(_get_predict(http, url))
    return out


def _get_predict(http, url: str) -> dict:
    resp = http.get(url + "/predict")
    ok = 400 <= resp.status_code < 500
    return {
        "what": "GET /predict",
        "status": resp.status_code,
        "ok": ok,
        "one_line": "\n" not in resp.text.strip(),
        "body": resp.text[:160],
    }


def slow_clients(url: str, port: int, n: int) -> dict:
    """``n`` connections, opened one after the other, that send a request head and then stall
    mid-body (slowloris), then leave: how many were turned away with a 503, what a new client
    gets while they hang, and whether the server answers again once they are gone."""
    import httpx

    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(_request_head(port, 10**6) + b"--" + BOUNDARY.encode())
        socks.append(sock)
        time.sleep(0.05)  # each request is seen before the next connection counts
    time.sleep(0.5)
    refused = sum(_read_answer(s).startswith(b"HTTP/1.1 503") for s in socks if _readable(s))
    during = httpx.get(url + "/health", timeout=30).status_code
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    after = httpx.get(url + "/health", timeout=30).status_code
    return {"stalled": n, "refused_503": refused, "health_during": during, "health_after": after}


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _upload(path: Path) -> bool:
    """Whether a path in the server's TMPDIR can be an upload (torch may keep its compiler cache
    there, ``torchinductor_<user>``)."""
    return "torchinductor_" not in str(path)


def leftovers(pid: int, tmp: Path) -> dict:
    """Files left in the server's TMPDIR and the server's open files there (spooled uploads are
    unlinked at once, so only /proc shows one left open); waits up to 10 s for them to go."""
    uploads = tmp / "uploads"
    deadline = time.monotonic() + 10
    while True:
        files = sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*") if _upload(p))
        open_files = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(uploads)):
                open_files.append(target)
        if not (files or open_files) or time.monotonic() > deadline:
            return {"files_left": files, "open_files_left": open_files}
        time.sleep(0.5)


def run_all(run: Path, args: argparse.Namespace, tmp: Path) -> dict:
    import httpx

    clips = real_clips()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(run, port, args.limit_mb, args.max_connections, tmp)
    try:
        wait_healthy(url, proc, timeout=300)
        clip, text = clips[0]
        httpx.post(url + "/predict", files={"file": (clip.name, clip.read_bytes())}, timeout=600)
        result = {"rss_warm_mb": rss_mb(proc.pid), "limit_mb": args.limit_mb}
        result["loadavg_start"] = os.getloadavg()
        result["load"] = concurrency(url, proc.pid, clips, args.clients, args.rounds)
        result["oversized"] = oversized(port, proc.pid, args.big_mb, args.limit_mb)
        result["bad"] = check_bad_requests(url, clip.read_bytes())
        result["slow"] = slow_clients(url, port, args.max_connections + 8)
        result["leftovers"] = leftovers(proc.pid, tmp)
        result["health_after"] = httpx.get(url + "/health", timeout=30).status_code == 200
        result["server_alive"] = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    stderr = (tmp / "stderr.txt").read_text(errors="replace")
    result["tracebacks"] = stderr.count("Traceback")
    result["first_traceback"] = (
        stderr[stderr.find("Traceback") :][:3000] if "Traceback" in stderr else ""
    )
    result["server_errors_500"] = stderr.count('" 500')
    result["loadavg"] = os.getloadavg()
    return result


def report(r: dict, args: argparse.Namespace) -> None:
    if r["first_traceback"]:
        print(r["first_traceback"], file=sys.stderr)
    load, big = r["load"], r["oversized"]
    bad_ok = sum(b["ok"] and b["one_line"] for b in r["bad"])
    la = f"{r['loadavg_start'][0]:.1f} at the start, {r['loadavg'][0]:.1f} at the end"
    print(f"serve abuse test (load average {la})")
    print(
        f"  {args.clients} clients x {args.rounds} rounds of real clips: {load['requests']} "
        f"requests, {load['errors']} errors {load['first_errors'] or ''}"
    )
    print(
        f"    latency p50 {load['p50_s']:.2f} s, p95 {load['p95_s']:.2f} s, max "
        f"{load['max_s']:.2f} s; wall {load['wall_s']:.0f} s; RSS peak {load['rss_peak_mb']:.0f} MB"
    )
    for kind in ("declared", "chunked"):
        b = big[kind]
        print(
            f"  {big['body_mb']:g} MB body ({kind}, limit {r['limit_mb']:g} MB): "
            f"{b['status_line']!r} after {b['sent_mb']:.1f} MB sent ({b['s']:.2f} s)"
        )
    b = big["under_limit"]
    print(f"  {b['sent_mb']:.1f} MB body (under the limit): {b['status_line']!r} ({b['s']:.2f} s)")
    print(
        f"    server RSS {big['rss_before_mb']:.0f} MB before, peak {big['rss_peak_mb']:.0f} MB "
        f"(+{big['rss_growth_mb']:.1f} MB)"
    )
    print(f"  bad requests: {bad_ok} of {len(r['bad'])} a 4xx with a one-line body")
    for b in r["bad"]:
        mark = "ok " if b["ok"] and b["one_line"] else "BAD"
        print(f"    {mark} {b['status']} {b['what']}: {b['body'][:90]}")
    slow = r["slow"]
    print(
        f"  {slow['stalled']} stalled uploads (connection limit {args.max_connections}): "
        f"{slow['refused_503']} turned away with a 503; /health {slow['health_during']} while "
        f"they hang, {slow['health_after']} after they leave"
    )
    left = r["leftovers"]
    print(
        f"  temp files left {len(left['files_left'])}, uploads left open "
        f"{len(left['open_files_left'])}; tracebacks in stderr {r['tracebacks']}; "
        f"health after {r['health_after']}, alive {r['server_alive']}"
    )


def record_rows(r: dict) -> None:
    from results import Row, command_line, record

    load, big = r["load"], r["oversized"]
    where = f"{load['requests']} requests of real IEMOCAP clips, tiny run, loopback"
    la = f"load average {r['loadavg_start'][0]:.1f} at the start, {r['loadavg'][0]:.1f} at the end"
    bad_ok = sum(b["ok"] and b["one_line"] for b in r["bad"])
    left = len(r["leftovers"]["files_left"]) + len(r["leftovers"]["open_files_left"])
    slow = r["slow"]
    checks = (
        f"{bad_ok}/{len(r['bad'])} malformed requests a one-line 4xx; {slow['stalled']} stalled "
        f"uploads: {slow['refused_503']} turned away (503), /health {slow['health_during']} "
        f"while they hung, {slow['health_after']} after; {r['tracebacks']} tracebacks; {left} "
        f"temp files left; {la}"
    )
    sent = f"413 after {big['declared']['sent_mb']:.1f} MB (Content-Length), "
    sent += f"{big['chunked']['sent_mb']:.1f} MB (chunked), limit {r['limit_mb']:g} MB; a "
    sent += f"{big['under_limit']['sent_mb']:.0f} MB junk upload under the limit: "
    sent += f"{big['under_limit']['status_line'][9:12]}; {la}"

    def row(name: str, dataset: str, metric: str, value: float, note: str) -> Row:
        return Row(f"serve_abuse.{name}", dataset, "tav", metric, value, command_line(), note=note)

    record(
        [
            row("errors", where, "errors", load["errors"], f"{load['wall_s']:.0f} s wall; {la}"),
            row("p50_latency", where, "seconds", round(load["p50_s"], 2), la),
            row("p95_latency", where, "seconds", round(load["p95_s"], 2), la),
            row(
                "oversized_rss_growth",
                f"{big['body_mb']:g} MB body",
                "MB",
                big["rss_growth_mb"],
                sent,
            ),
            row("bad_requests_4xx", f"{len(r['bad'])} malformed requests", "count", bad_ok, checks),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="trained run folder (default: a tiny one)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit-mb", type=float, default=20, help="the server's upload limit")
    parser.add_argument("--max-connections", type=int, default=32, help="the server's bound")
    parser.add_argument("--big-mb", type=float, default=200, help="the oversized body")
    parser.add_argument("--timeout", type=float, default=1800, help="kill everything after this")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    args = parser.parse_args()
    if not (CLIPS / "labels.csv").is_file():
        sys.exit(f"real clips not found in {CLIPS}")
    killer = threading.Timer(args.timeout, lambda: os._exit(3))  # the bound, whatever happens
    killer.daemon = True
    killer.start()
    with tempfile.TemporaryDirectory(prefix="serve-abuse-") as tmp:
        run = args.run or tiny_run(Path(tmp) / "tiny")
        result = run_all(run, args, Path(tmp))
    killer.cancel()
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.record:
        record_rows(result)


if __name__ == "__main__":
    main()
