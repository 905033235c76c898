"""Benchmark of the Gradio demo (issue 6): prediction latency, start-up time, concurrent clients.

Measures, in one run and on one machine:

1. one prediction of a 640x480 upload through :meth:`demo_app.service.DemoService.predict`,
   the very function the app's /predict endpoint calls (load the file, letterbox, forward,
   colourise, colour bar, legend, arrays file): median and p95 after warm-up; target
   median < 300 ms on the 2-core CPU;
2. the app's start-up: ``python -m vtagml_core demo`` in a subprocess, from process start
   until the page answers HTTP 200; target < 20 s;
3. ``--clients`` gradio_client clients (8) sending ``--requests`` requests each (5) at once to
   that server: every request answered, median and p95 latency, the server's peak RSS;
4. ``--bomb-clients`` clients (16) x ``--bomb-requests`` (3) with ``--bombs`` (4) of the
   requests a 16-bit PNG of 6300x6300 zeros (77 KB, 39.7 MP: under the pixel cap), spread
   over the run: every request answered (the bombs too: they are valid images), latency of
   all requests and of the bombs, the server's peak RSS (Linux ``VmHWM``: the high-water mark
   since the server started) -- decoding memory must stay bounded under such input.

The model is ``--checkpoint DIR`` if given, else the default demo checkpoint if one is found,
else a freshly built (untrained: same compute) model of the quick preset; the output says
which. Figures are printed, not asserted. Usage::

    python bench/bench_demo.py
    python bench/bench_demo.py --checkpoint runs/train/vtagml/best --threads 2
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo_app/ sits next to the package

from demo_app.app import default_threads  # noqa: E402
from demo_app.checkpoints import CheckpointCatalog, default_roots, find_checkpoints  # noqa: E402
from demo_app.service import PREDICT_OUTPUTS, DemoService  # noqa: E402
from vtagml_core.data.synthetic.render import render_scene  # noqa: E402

#: Targets from the issue (printed next to the measurements).
TARGET_MEDIAN_MS = 300.0
TARGET_READY_S = 20.0
#: Upload size (height, width) and the scene it shows.
UPLOAD_SIZE = (480, 640)
UPLOAD_SCENE = ("indoor", 11)
WARMUP = 3
#: Seconds to wait for the server to start, and for one request.
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 300
#: The decompression-bomb-like upload: a 16-bit grayscale PNG of zeros, this many pixels a side.
BOMB_SIDE = 6300


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(ms: list[float]) -> str:
    return (f"median {statistics.median(ms):.0f} ms, p95 {_percentile(ms, 95):.0f} ms, "
            f"min {min(ms):.0f} ms, n={len(ms)}")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def _checkpoint(arg: Path | None, tmp: Path) -> tuple[Path, str, str]:
    """(root to list, label, description) of the model to benchmark."""
    if arg is not None:
        folder = arg.resolve()
        return folder.parent, f"{folder.parent.name}/{folder.name}", f"checkpoint {arg}"
    found = find_checkpoints(default_roots())
    default = CheckpointCatalog(default_roots()).default()  # the newest that loads
    if default is not None:
        folder = found[default]
        return folder.parent, f"{folder.parent.name}/{folder.name}", f"default checkpoint {folder}"
    from vtagml_core.train.config import load_kit_config
    from vtagml_core.model.checkpoint import save_model
    from vtagml_core.model.vtagml import VTAGML

    cfg = load_kit_config(None, [], preset="quick").model
    save_model(VTAGML(cfg), tmp / "ckpts" / "fresh")
    return (tmp / "ckpts", "ckpts/fresh",
            f"no checkpoint found: a freshly built, untrained quick-preset model "
            f"({cfg.backbone.name}, {cfg.backbone.img_size} px, tasks {cfg.tasks})")


def sixteen_bit_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """Write a ``side x side`` 16-bit grayscale PNG of zeros (a few dozen KB), row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 2 * side)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def peak_rss_mb(pid: int) -> str:
    """The process's peak resident memory so far (Linux VmHWM), or its current RSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:.0f} MB"
    except OSError:
        pass
    try:
        import psutil

        return f"{psutil.Process(pid).memory_info().rss / 2**20:.0f} MB (current; peak unavailable)"
    except (ImportError, OSError):
        return "unavailable"


def bench_predict(root: Path, label: str, upload: Path, repeats: int) -> None:
    service = DemoService([root])
    for _ in range(WARMUP):
        service.predict(str(upload), label)
    total, forward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = dict(zip(PREDICT_OUTPUTS, service.predict(str(upload), label)))
        total.append((time.perf_counter() - start) * 1e3)
        if out["status"].startswith("**Error"):
            raise RuntimeError(out["status"])
        pred, _, _ = service.run_prediction(str(upload), label)
        forward.append(pred.timings["forward"])
    verdict = "meets" if statistics.median(total) < TARGET_MEDIAN_MS else "misses"
    print(f"1. predict handler, {UPLOAD_SIZE[1]}x{UPLOAD_SIZE[0]} PNG: {_summary(total)} "
          f"({verdict} the {TARGET_MEDIAN_MS:.0f} ms target)")
    print(f"   of which model forward alone: {_summary(forward)}")
    service.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, threads: int) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "vtagml_core", "demo", "--port", str(port),
           "--checkpoints", str(root), "--threads", str(threads)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - start
        except OSError:
            pass
        if proc.poll() is not None or time.perf_counter() - start > START_TIMEOUT_S:
            proc.kill()
            raise RuntimeError(f"the demo did not start: {' '.join(cmd)} (exit {proc.poll()})")
        time.sleep(0.1)


def bench_clients(url: str, upload: Path, clients: int, requests: int, pid: int, number: int,
                  bomb: Path | None = None, bombs: int = 0) -> None:
    """``clients`` x ``requests`` at once; ``bombs`` of them (evenly spread) send ``bomb``."""
    from gradio_client import Client, handle_file

    total = clients * requests
    bomb_slots = {round(i * total / bombs) for i in range(bombs)} if bomb is not None and bombs else set()
    latencies: list[float] = []
    bomb_latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client_loop(index: int) -> None:
        client = Client(url, verbose=False)
        barrier.wait()
        for r in range(requests):
            is_bomb = r * clients + index in bomb_slots  # request r of every client runs together
            start = time.perf_counter()
            try:
                out = client.predict(handle_file(str(bomb if is_bomb else upload)), api_name="/predict")
                ok = len(out) == len(PREDICT_OUTPUTS) and not str(out[-1]).startswith("**Error")
                problem = None if ok else str(out[-1])
            except Exception as err:  # count it as unanswered, keep the others going
                problem = f"{type(err).__name__}: {err}"
            with lock:
                latencies.append((time.perf_counter() - start) * 1e3)
                if is_bomb:
                    bomb_latencies.append(latencies[-1])
                if problem:
                    failures.append(("bomb: " if is_bomb else "") + problem)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S * requests)
    wall = time.perf_counter() - start
    answered = len(latencies) - len(failures)
    what = f" with {len(bomb_slots)} 16-bit {BOMB_SIDE}x{BOMB_SIDE} bombs mixed in" if bomb_slots else ""
    print(f"{number}. {clients} clients x {requests} requests{what}: {answered}/{total} answered "
          f"in {wall:.1f} s; latency {_summary(latencies)}")
    if bomb_latencies:
        print(f"   the bombs alone: {_summary(bomb_latencies)}")
    print(f"   server peak RSS since start: {peak_rss_mb(pid)}")
    for problem in failures[:5]:
        print(f"   failed: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="model folder to serve")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch threads, as the demo sets them (default: half the cores)")
    parser.add_argument("--repeats", type=int, default=20, help="timed predictions (20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--requests", type=int, default=5, help="requests per client (5)")
    parser.add_argument("--bomb-clients", type=int, default=16,
                        help="concurrent clients of the run with bombs (16)")
    parser.add_argument("--bomb-requests", type=int, default=3,
                        help="requests per client of the run with bombs (3)")
    parser.add_argument("--bombs", type=int, default=4,
                        help="16-bit 6300x6300 PNGs among those requests (4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vtagml-bench-demo-") as tmp:
        tmp_path = Path(tmp)
        root, label, what = _checkpoint(args.checkpoint, tmp_path)
        upload = tmp_path / "upload_640x480.png"
        Image.fromarray(render_scene(UPLOAD_SCENE[0], UPLOAD_SCENE[1], UPLOAD_SIZE)["image"]).save(upload)
        print(f"machine: {platform.processor() or platform.machine()}, {_load()}; torch threads "
              f"{args.threads}; model: {what}")
        bench_predict(root, label, upload, args.repeats)
        proc, url, ready = start_server(root, args.threads)
        try:
            verdict = "meets" if ready < TARGET_READY_S else "misses"
            print(f"2. app ready (HTTP 200) {ready:.1f} s after `python -m vtagml_core demo` "
                  f"started ({verdict} the {TARGET_READY_S:.0f} s target); server peak RSS "
                  f"{peak_rss_mb(proc.pid)}")
            bench_clients(url, upload, args.clients, args.requests, proc.pid, 3)
            bomb = sixteen_bit_bomb(tmp_path / "bomb_16bit.png")
            bench_clients(url, upload, args.bomb_clients, args.bomb_requests, proc.pid, 4,
                          bomb, args.bombs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"done; {_load()}")


if __name__ == "__main__":
    main()
