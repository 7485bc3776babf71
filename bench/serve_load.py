"""Load test of `python -m gru_lightning.serve` against a plain endpoint, over real HTTP.

    python bench/serve_load.py CKPT --texts ../shared/data/imdb [--seconds 8] [--requests 1500]
    python bench/serve_load.py CKPT --serve-options="--threads 1"   # options of the server

Both servers run on 127.0.0.1, one at a time, each in a process of its own: the LitServe
server (dynamic batching across requests), then the peer, a plain FastAPI/uvicorn endpoint
that calls `Predictor.predict` once per request, without batching. An asyncio client
(aiohttp) keeps 1, 8 and 32 requests in flight, each of one text or of 64, IMDB test reviews
as the payload, for at most --seconds or --requests per cell, and reports requests/s, texts/s
and the p50/p95/p99 latency. The in-process `Predictor.predict` on the same 64-text batches
is the ceiling. Writes bench/results/serve_load.{json,md}.
"""

# No `from __future__ import annotations`: FastAPI reads the peer's body model from the
# annotation of its endpoint, a class defined inside plain_server().
import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CONCURRENCY = (1, 8, 32)
SIZES = (1, 64)


def imdb_texts(folder: Path, n: int) -> list[str]:
    import pyarrow.parquet as pq

    files = sorted(folder.glob("test*.parquet"))
    if not files:
        raise SystemExit(f"no test*.parquet in {folder}")
    return pq.read_table(files[0], columns=["text"]).column("text").to_pylist()[:n]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def plain_server(checkpoint: str, port: int) -> None:
    """The peer: one `Predictor.predict` call per request, no batching."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    from gru_lightning.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    app = FastAPI()

    class Body(BaseModel):
        texts: list[str]

    @app.post("/predict")
    def predict(body: Body) -> dict:
        return {"predictions": [{"label": p.label, "score": p.score}
                                for p in predictor.predict(body.texts)]}

    @app.get("/health")
    def health() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start(kind: str, checkpoint: str, port: int, options: list[str]) -> subprocess.Popen:
    if kind == "litserve":
        command = [sys.executable, "-m", "gru_lightning.serve", checkpoint, "--port",
                   str(port), "--max-texts", "64", *options]
    else:
        command = [sys.executable, __file__, "--plain-server", checkpoint, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the {kind} server did not start")


async def load(url: str, payloads: list[bytes], clients: int, seconds: float,
               limit: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client(index: int) -> None:
            nonlocal sent, errors
            while sent < limit and time.perf_counter() < stop_at:
                body = payloads[(sent + index) % len(payloads)]
                sent += 1
                start = time.perf_counter()
                async with session.post(url, data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - began
    latencies.sort()

    def quantile(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"requests": len(latencies), "errors": errors, "seconds": wall,
            "requests_per_s": len(latencies) / wall, "p50_ms": quantile(0.50),
            "p95_ms": quantile(0.95), "p99_ms": quantile(0.99),
            "mean_ms": 1000 * statistics.fmean(latencies)}


def in_process(checkpoint: str, batches: list[list[str]], seconds: float) -> float:
    """Texts/s of `Predictor.predict` on the same 64-text batches, one after another."""
    from gru_lightning.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    predictor.predict(batches[0])  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictor.predict(batches[done % len(batches)])
        done += 1
    return done * len(batches[0]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--texts", type=Path, default=ROOT.parent / "shared/data/imdb")
    parser.add_argument("--seconds", type=float, default=8.0, help="per cell, at most")
    parser.add_argument("--requests", type=int, default=1500, help="per cell, at most")
    parser.add_argument("--serve-options", default="", help="options of gru_lightning.serve")
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="serve_load")
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.checkpoint, args.port)
        return
    texts = imdb_texts(args.texts, 64 * 40)
    batches = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    payloads = {1: [json.dumps({"texts": [t]}).encode() for t in texts],
                64: [json.dumps({"texts": b}).encode() for b in batches]}
    rows = []
    for kind in ("litserve", "plain"):
        port = free_port()
        process = start(kind, args.checkpoint, port, args.serve_options.split())
        try:
            url = f"http://127.0.0.1:{port}/predict"
            asyncio.run(load(url, payloads[1][:50], 4, 2.0, 200))  # warm up
            for size in SIZES:
                for clients in CONCURRENCY:
                    row = asyncio.run(load(url, payloads[size], clients, args.seconds,
                                           args.requests))
                    row.update(server=kind, texts_per_request=size, clients=clients,
                               texts_per_s=row["requests_per_s"] * size)
                    rows.append(row)
                    print(f"{kind:8} {size:2} texts x {clients:2} clients: "
                          f"{row['requests_per_s']:7.1f} req/s, p50 {row['p50_ms']:6.1f} ms, "
                          f"p99 {row['p99_ms']:6.1f} ms, errors {row['errors']}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    ceiling = in_process(args.checkpoint, batches, args.seconds)
    print(f"in-process Predictor.predict, 64-text batches: {ceiling:.0f} texts/s")

    def cell(kind: str, size: int, clients: int) -> dict:
        return next(r for r in rows if (r["server"], r["texts_per_request"], r["clients"]) ==
                    (kind, size, clients))

    single, plain = cell("litserve", 1, 32), cell("plain", 1, 32)
    batch64 = cell("litserve", 64, 32)
    targets = {
        "single_text_32_clients_throughput_ratio": single["requests_per_s"] /
        plain["requests_per_s"],
        "single_text_32_clients_p99_ratio": single["p99_ms"] / plain["p99_ms"],
        "texts64_32_clients_share_of_in_process": batch64["texts_per_s"] / ceiling,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"checkpoint": args.checkpoint, "serve_options": args.serve_options, "rows": rows,
         "in_process_texts_per_s": ceiling, "targets": targets}, indent=1))
    lines = ["| server | texts/request | clients | req/s | texts/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['texts_per_request']} | {r['clients']} | "
                     f"{r['requests_per_s']:.1f} | {r['texts_per_s']:.0f} | {r['p50_ms']:.1f} "
                     f"| {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
    lines.append(f"\nIn-process `Predictor.predict` on the 64-text batches: {ceiling:.0f} "
                 "texts/s.\n")
    lines += [f"- {k}: {v:.2f}" for k, v in targets.items()]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
