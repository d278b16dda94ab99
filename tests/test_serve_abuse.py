"""``deepmsi serve`` under abuse, against a real server process (the fast versions of
benchmarks/serve_abuse.py): every malformed request is a 4xx with a one-line body and no
traceback in the server's log; an oversized body is refused with a 413 before it is read whole,
without the server's memory growing; no upload is left on disk or open after failed requests;
the default address is loopback; concurrent clients are all answered."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from deepmsi.cli import build_parser

LIMIT_MB = 4
MAX_CONNECTIONS = 8
BOUNDARY = "abuse"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``deepmsi serve`` in a subprocess with its own TMPDIR; stdout and stderr in ``log``."""

    def __init__(self, run_dir: Path, root: Path) -> None:
        self.port, self.uploads, self.log = _free_port(), root / "uploads", root / "server.log"
        self.uploads.mkdir()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TMPDIR": str(self.uploads), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "deepmsi", "serve", "--run", str(run_dir)]
        cmd += ["--port", str(self.port), "--max-upload-mb", str(LIMIT_MB)]
        cmd += ["--max-connections", str(MAX_CONNECTIONS)]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("server did not answer /health in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def leftovers(self) -> list[str]:
        """Files in the server's TMPDIR, and its open files there (a spooled upload is unlinked
        at once, so only /proc shows one left open)."""
        # torch may keep its compiler cache in TMPDIR (torchinductor_<user>): not an upload.
        found = [str(p) for p in self.uploads.rglob("*") if "torchinductor_" not in str(p)]
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(self.uploads)):
                found.append(f"open: {target}")
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    srv = Server(tiny.run_dir, tmp_path_factory.mktemp("abuse"))
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def clip(tiny) -> bytes:
    return tiny.clips[0].read_bytes()


def send_body(port: int, total: int, *, chunked: bool) -> tuple[bytes, int]:
    """POST a ``total``-byte multipart body over a raw socket, stopping when an answer comes;
    returns (the answer's head, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(
        f"POST /predict HTTP/1.1\r\nHost: x\r\n{length}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
    )
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
    pieces = [head.encode()] + [bytes(256 * 1024)] * (total // (256 * 1024))
    sent = 0
    try:
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
    except OSError:
        pass  # the server closed the connection after answering
    answer = b""
    try:
        while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
            answer += more
    except OSError:
        pass
    sock.close()
    return answer, sent


def test_default_host_is_loopback_and_connections_are_bounded(monkeypatch):
    import uvicorn

    import deepmsi.serve
    from deepmsi.cli import serve as serve_cli

    args = build_parser().parse_args(["serve", "--run", "some/run"])
    assert args.host == "127.0.0.1" and args.max_connections == 32
    seen = {}
    monkeypatch.setattr(deepmsi.serve, "create_app", lambda run_dir, max_upload_mb, **_: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs, app=app))
    assert serve_cli.run(args) == 0
    assert seen["host"] == "127.0.0.1" and seen["limit_concurrency"] == 32 and seen["app"] == "app"


def bad_requests(clip: bytes) -> dict[str, dict]:
    """What a careless client or an attacker sends, as httpx.post arguments."""
    text_as_mp4 = b"just some notes, not a video\n" * 40
    big_srt = b"1\n00:00:00,000 --> 00:00:01,000\nhi\n\n" * 60_000
    return {
        "empty body": {},
        "empty multipart body": {
            "headers": {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            "content": b"",
        },
        "JSON body": {"json": {"transcript": "hi"}},
        "wrong field name": {"files": {"video": ("clip.mp4", clip)}},
        "unknown text field": {"data": {"transcript": "hi", "lang": "en"}},
        "text file named .mp4": {"files": {"file": ("notes.mp4", text_as_mp4)}},
        "path traversal": {"files": {"file": ("../../x.mp4", clip)}},
        "absolute path": {"files": {"file": ("/etc/x.mp4", clip)}},
        "Windows path": {"files": {"file": ("..\\x.mp4", clip)}},
        "100 kB text field": {"data": {"transcript": "a" * 100_000}},
        "transcript over the limit": {"data": {"transcript": "word " * 2100}},
        "1 MB transcript file": {"files": {"file": ("talk.txt", b"word " * 200_000)}},
        "2 MB subtitles": {"files": {"file": ("c.mp4", clip), "subtitles": ("s.srt", big_srt)}},
        "file twice": {"files": [("file", ("a.mp4", clip)), ("file", ("b.mp4", clip))]},
        "file as text": {"data": {"file": "clip.mp4"}},
        "too many fields": {"data": {f"f{i}": "x" for i in range(12)}},
    }


def test_bad_requests_are_one_line_4xx_without_traceback(server, clip):
    before = server.log.read_text()
    wrong = []
    for what, kwargs in bad_requests(clip).items():
        r = httpx.post(server.url + "/predict", timeout=60, **kwargs)
        detail = r.json().get("detail") if r.headers["content-type"] == "application/json" else ""
        if not (400 <= r.status_code < 500 and detail and "\n" not in r.text.strip()):
            wrong.append(f"{what}: {r.status_code} {r.text[:200]!r}")
        if "../" in what or "path" in what:
            assert "must be a plain name" in detail, what
    assert wrong == []
    log = server.log.read_text()[len(before) :]
    assert "Traceback" not in log and '" 500' not in log
    assert log.count('POST /predict HTTP/1.1" 4') == len(bad_requests(clip))  # the log is read
    assert server.proc.poll() is None


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413_before_it_is_read(server, chunked):
    total = 64 * 2**20
    rss = server.rss_mb()
    answer, sent = send_body(server.port, total, chunked=chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # What the socket buffers take in before the answer arrives, not the whole body.
    assert sent < (LIMIT_MB + 16) * 2**20
    assert server.rss_mb() - rss < 50
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_stalled_uploads_are_bounded_and_leave_no_traceback(server):
    """Slowloris: uploads that stall, then vanish. Past the connection limit new clients get a
    503 instead of a hang; once the stalled clients go, the server answers, and their leaving
    is not logged as a server error."""
    before = server.log.read_text()
    socks = []
    for _ in range(MAX_CONNECTIONS + 2):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            b"Content-Type: multipart/form-data; boundary=abuse\r\n\r\n--abuse"
        )
        socks.append(sock)
        time.sleep(0.05)  # each request is parsed before the next connection counts
    time.sleep(0.5)
    assert httpx.get(server.url + "/health", timeout=30).status_code == 503
    for sock in socks:
        sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "server still refusing after the clients left"
        time.sleep(0.2)
    time.sleep(0.5)
    log = server.log.read_text()[len(before) :]
    assert "Traceback" not in log and "Exceeded concurrency limit" in log


def wait_clean(server: Server, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := server.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_uploads_are_removed_after_failed_requests(server, clip):
    # Over the form parser's 1 MB in memory, so each is spooled to a file in TMPDIR.
    large = os.urandom(2 * 2**20)
    url = server.url + "/predict"
    cases = {
        "not media": {"files": {"file": ("noise.mp4", large)}},  # saved, decoded, refused
        "unknown field": {"files": {"file": ("noise.mp4", large)}, "data": {"lang": "en"}},
        "file name": {"files": {"file": ("../x.mp4", large)}},
        "subtitles": {"files": {"file": ("c.mp4", clip), "subtitles": ("s.srt", b"nonsense")}},
    }
    for what, kwargs in cases.items():
        assert httpx.post(url, timeout=60, **kwargs).status_code == 400, what
    answer, _ = send_body(server.port, 3 * LIMIT_MB * 2**20, chunked=True)
    assert answer.startswith(b"HTTP/1.1 413")  # refused half-way through a spooled file
    r = httpx.post(url, files={"file": ("c.mp4", clip)}, timeout=60)
    assert r.status_code == 200, r.text
    assert wait_clean(server) == []


def test_concurrent_clients_are_all_answered(server, tiny):
    results: list[int] = []

    def client(k: int) -> None:
        data = tiny.clips[k % len(tiny.clips)].read_bytes()
        with httpx.Client(timeout=120) as http:
            for _ in range(2):
                r = http.post(server.url + "/predict", files={"file": ("c.mp4", data)})
                results.append(r.status_code)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    health = httpx.get(server.url + "/health", timeout=30).status_code
    for t in threads:
        t.join()
    assert results == [200] * 8 and health == 200
    assert wait_clean(server) == []
