"""Serve a trained checkpoint over HTTP with LitServe (the `serve` extra):

    python -m gru_lightning.serve CKPT [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    curl -s localhost:8000/predict -H 'Content-Type: application/json' \
        -d '{"texts": ["A wonderful film.", "Dull."]}'
    # {"predictions": [{"label": "pos", "score": 0.97}, {"label": "neg", "score": 0.91}]}

`POST /predict` takes `{"texts": [...]}` or `{"text": "..."}`, and `"top_k": k` or
`"all_scores": true` for the classes' probabilities; the predictions come in the input's
order, each as `Predictor.predict` gives it (a text it cannot classify gets an `error`, the
others are unaffected). Requests arriving together are batched into one forward pass
(`--max-batch-size` requests, waiting at most `--batch-timeout` s). `GET /health` says
whether the worker is ready, `GET /info` the model's classes, maxlen and training metrics.
A bad request gets a 4xx with `{"error": "..."}` and the server serves on.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation as a
# class to validate the body with.
import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import litserve as ls
import torch
from fastapi import Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gru_lightning import checkpoints
from gru_lightning.checkpoints import CheckpointError
from gru_lightning.devices import resolve_device
from gru_lightning.predict import Prediction, Predictor

MAX_TEXTS, MAX_CHARS, MAX_BODY = 256, 100_000, 8 * 2**20  # per request; per text; bytes


class PredictRequest(BaseModel):
    """The body of `POST /predict`; its limits are set by the server's options."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # This server's limits (build_server sets them before the HTTP processes fork).
    limits: ClassVar[dict[str, int]] = {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS}
    texts: list[str] | None = None
    text: str | None = None
    top_k: int | None = Field(None, ge=1)
    all_scores: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> "PredictRequest":
        if (self.texts is None) == (self.text is None):
            raise ValueError('give "texts": [...] or "text": "..."')
        texts = self.all_texts()
        limits = type(self).limits
        if not texts:
            raise ValueError('"texts" is empty: give at least one text')
        if len(texts) > limits["max_texts"]:
            raise ValueError(f"{len(texts)} texts in one request; at most "
                             f"{limits['max_texts']} (--max-texts)")
        for i, text in enumerate(texts):
            if len(text) > limits["max_chars"]:
                raise ValueError(f"text {i} has {len(text)} characters; at most "
                                 f"{limits['max_chars']} (--max-chars): it is refused, not "
                                 "truncated")
        return self

    def all_texts(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text]


class ClassifierAPI(ls.LitAPI):
    """The checkpoint's `Predictor` behind LitServe: decode (validated by `PredictRequest`
    before a request is queued), one forward pass per batch of requests, encode."""

    def __init__(self, checkpoint: str, device: str | None = None, api_key: str | None = None,
                 threads: int | None = None, **batching: Any):
        super().__init__(**batching)
        self.checkpoint = checkpoint  # only plain values: the worker process unpickles this
        self.device = device
        self.api_key = api_key
        self.threads = threads
        self.batched = batching.get("max_batch_size", 1) > 1

    def setup(self, device: str) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.predictor = Predictor.from_checkpoint(self.checkpoint, self.device or device)

    def decode_request(self, request: PredictRequest) -> tuple[list[str], int | None, bool]:
        return request.all_texts(), request.top_k, request.all_scores

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, x: Any) -> Any:
        requests = x if self.batched else [x]
        texts = [text for texts, _, _ in requests for text in texts]
        # One pass for every request's texts, every class's scores; each request then keeps
        # what it asked for.
        predictions = self.predictor.predict(texts, all_scores=True)
        outputs, start = [], 0
        for request_texts, top_k, all_scores in requests:
            chunk = predictions[start : start + len(request_texts)]
            start += len(request_texts)
            outputs.append([_shown(p, top_k, all_scores) for p in chunk])
        return outputs if self.batched else outputs[0]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: list[Prediction]) -> dict[str, Any]:
        return {"predictions": [{k: v for k, v in asdict(p).items() if v is not None}
                                for p in output]}

    def authorize(self, x_api_key: str | None = Header(None)) -> None:
        """With --api-key, every endpoint wants it in the X-API-Key header."""
        if self.api_key and not secrets.compare_digest(x_api_key or "", self.api_key):
            raise HTTPException(401, "a valid X-API-Key header is required")


def _shown(prediction: Prediction, top_k: int | None, all_scores: bool) -> Prediction:
    scores = prediction.scores
    if scores is not None and not all_scores:
        scores = dict(list(scores.items())[:top_k]) if top_k else None
    return replace(prediction, scores=scores)


async def _one_line_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors (a list of dicts) as one line; malformed JSON is a 400."""
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
    if any(p.get("type") == "model_attributes_type" and tuple(p.get("loc", ())) == ("body",)
           for p in problems):
        return JSONResponse({"error": "the body must be a JSON object, sent with "
                                      "Content-Type: application/json"}, status_code=422)
    parts = []
    for p in problems:
        where = ".".join(str(part) for part in p.get("loc", ()) if part != "body")
        message = str(p.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return JSONResponse({"error": "; ".join(parts)}, status_code=422)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)


def model_info(checkpoint: dict[str, Any], checkpoint_path: str) -> dict[str, Any]:
    """What `GET /info` says of the model (`checkpoints.read(checkpoint_path)`): classes,
    maxlen, network, training metrics."""
    encoder = checkpoint.get("text_encoder") or {}
    info: dict[str, Any] = {
        "checkpoint": str(checkpoint_path), "classes": list(checkpoint["class_names"]),
        "maxlen": encoder.get("maxlen"), "network": checkpoint["network"],
        "stack": checkpoint.get("stack") is not None}
    metrics_file = Path(checkpoint_path).resolve().parent.parent / "metrics.json"
    if metrics_file.is_file():  # the run folder's, beside checkpoints/
        recorded = json.loads(metrics_file.read_text())
        info["metrics"] = {k: v for k, v in recorded.get("metrics", recorded).items()
                           if isinstance(v, int | float)}
    return info


def build_server(args: argparse.Namespace) -> ls.LitServer:
    """The LitServer the options describe; reads the checkpoint once here, so a bad one is
    one message before any worker starts."""
    checkpoint = checkpoints.read(args.checkpoint)
    info = model_info(checkpoint, args.checkpoint)
    device = resolve_device(args.device)  # cuda where there is one, as predict chooses
    Predictor.from_contents(checkpoint, args.checkpoint, "cpu")
    api = ClassifierAPI(args.checkpoint, str(device), args.api_key, args.threads,
                        max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    PredictRequest.limits = {"max_texts": args.max_texts, "max_chars": args.max_chars}
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    server = ls.LitServer(api, accelerator=accelerator, devices=1,
                          workers_per_device=args.workers,
                          timeout=args.timeout, model_metadata=info,
                          max_payload_size=args.max_body)
    server.app.add_exception_handler(RequestValidationError, _one_line_error)
    server.app.add_exception_handler(HTTPException, _http_error)
    return server


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gru_lightning.serve",
                                     description="Serve a checkpoint from train.py over HTTP.")
    parser.add_argument("checkpoint", help="a .ckpt file written by train.py")
    parser.add_argument("--host", default="127.0.0.1",
                        help="127.0.0.1 (default: this machine only), 0.0.0.0 or ::")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("GRU_LIGHTNING_API_KEY"),
                        help="require this key in the X-API-Key header (default: "
                             "$GRU_LIGHTNING_API_KEY; none)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    parser.add_argument("--max-batch-size", type=int, default=16,
                        help="requests batched into one forward pass at most")
    parser.add_argument("--batch-timeout", type=float, default=0.005,
                        help="seconds a batch waits for more requests")
    parser.add_argument("--max-texts", type=int, default=MAX_TEXTS, help="texts per request")
    parser.add_argument("--max-chars", type=int, default=MAX_CHARS,
                        help="characters per text; a longer one is refused (422)")
    parser.add_argument("--max-body", type=int, default=MAX_BODY,
                        help="request body bytes; a larger one is refused (413)")
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads per worker (default: PyTorch's, one per core)")
    parser.add_argument("--timeout", type=float, default=30,
                        help="seconds a request may wait in the queue (then 504)")
    args = parser.parse_args(argv)
    for name in ("max_batch_size", "max_texts", "max_chars", "max_body", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.batch_timeout < 0 or args.timeout <= args.batch_timeout:
        parser.error("--batch-timeout must be >= 0 and below --timeout")
    if args.host not in ("127.0.0.1", "0.0.0.0", "::"):
        parser.error(f"--host must be 127.0.0.1, 0.0.0.0 or :: (LitServe's), got {args.host}")
    if args.host != "127.0.0.1" and not args.api_key:
        print("warning: serving beyond this machine without --api-key", file=sys.stderr)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = build_server(args)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    main_pid = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        # SIGTERM takes Ctrl-C's path: uvicorn answers the requests in flight, then the
        # workers stop. The forked HTTP processes inherit this handler and are done by then.
        if os.getpid() != main_pid:
            os._exit(0)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"serving {args.checkpoint} on http://{args.host}:{args.port} (POST /predict, "
          "GET /health, GET /info)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: a clean stop
        server.run(host=args.host, port=args.port, generate_client_file=False,
                   log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
