"""The HTTP server (`python -m gru_lightning.serve`), started for real in a subprocess on a
free port and spoken to over HTTP: its outputs against `Predictor`'s, every bad request's
4xx (and the server serving on after it), the API key, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gru_lightning.predict import Predictor
from gru_lightning.train import train
from tests.conftest import ROOT, compose_train_config
from tests.source_data import tweeteval_folder

pytest.importorskip("litserve", reason="the serve extra: pip install -e '.[serve]'")

from gru_lightning.serve import MAX_BODY  # the serve extra, checked above


class Server:
    def __init__(self, checkpoint: Path, *options: str) -> None:
        with socket.socket() as probe:  # a free port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gru_lightning.serve", str(checkpoint), "--port",
             str(self.port), *options], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        self.headers = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stdout.read()}")
            try:
                if self.get("/health", headers={"X-API-Key": options[-1]} if
                            "--api-key" in options else {})[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the server did not become healthy in 90 s")

    def request(self, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
        request = urllib.request.Request(self.url + path, data=body, headers={
            "Content-Type": "application/json", **self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw.decode()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
        return self.request(path, None, headers)

    def predict(self, payload: object, **headers: str) -> tuple[int, dict | str]:
        return self.request("/predict", json.dumps(payload).encode(), headers)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def binary_server(trained) -> Iterator[Server]:
    server = Server(trained.last, "--max-texts", "8", "--max-chars", "2000")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stacked_checkpoint(tmp_path_factory) -> Path:
    """Three topics with the n-gram stack: a multi-class model and a stack in one."""
    tmp = tmp_path_factory.mktemp("stacked")
    cfg = compose_train_config(tmp, None, "data=lines",
                               f"data.dir={tweeteval_folder(tmp / 'topics')}",
                               "data.max_features=200", "data.maxlen=16", "ngram=nbsvm",
                               "ngram.model.buckets_log2=14", "trainer.max_epochs=2")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def _expected(checkpoint: Path, texts: list[str], **options) -> list[dict]:
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    return [{k: v for k, v in vars(p).items() if v is not None}
            for p in predictor.predict(texts, **options)]


def _close(served: list[dict], expected: list[dict]) -> None:
    assert [p.get("label") for p in served] == [p.get("label") for p in expected]
    assert [p.get("error") for p in served] == [p.get("error") for p in expected]
    for got, want in zip(served, expected, strict=True):
        if "score" in want:
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        if "scores" in want:
            assert list(got["scores"]) == list(want["scores"])
            assert list(got["scores"].values()) == pytest.approx(list(want["scores"].values()),
                                                                 abs=1e-6)


def test_predictions_equal_the_predictors_in_the_inputs_order(binary_server, trained):
    texts = ["great wonderful superb film", "awful boring terrible film", "", "qwzx plonk",
             "loved it, brilliant"]
    status, body = binary_server.predict({"texts": texts})
    assert status == 200
    _close(body["predictions"], _expected(trained.last, texts))
    assert body["predictions"][2] == {"error": "empty text"}  # per text, the others answered
    status, body = binary_server.predict({"text": texts[0], "all_scores": True})
    assert status == 200 and list(body["predictions"][0]["scores"]) == ["pos", "neg"]
    _close(body["predictions"], _expected(trained.last, texts[:1], all_scores=True))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(binary_server, trained):
    texts = [f"{'great' if i % 2 else 'awful'} film number {i}" for i in range(24)]
    results: dict[int, tuple] = {}

    def ask(i: int) -> None:
        results[i] = binary_server.predict({"text": texts[i], "top_k": 1})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = _expected(trained.last, texts, top_k=1)
    for i in range(len(texts)):
        status, body = results[i]
        assert status == 200
        _close(body["predictions"], [expected[i]])


def test_info_and_health(binary_server, trained):
    status, info = binary_server.get("/info")
    assert status == 200
    model = info["model"]
    assert model["classes"] == ["neg", "pos"] and model["maxlen"] == 24
    assert model["metrics"]["test/acc"] == pytest.approx(trained.metrics["test/acc"])
    assert binary_server.get("/health") == (200, "ok")


def _body_of(size: int) -> bytes:
    """A one-text request of exactly `size` bytes."""
    frame = b'{"text": ""}'
    return frame[:-2] + b"a" * (size - len(frame)) + frame[-2:]


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "the body is not valid JSON"),
    (b"[1, 2]", 422, "the body must be a JSON object"),
    (b'{"texts": "one string"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": [1, 2]}', 422, "texts.0: Input should be a valid string"),
    (b'{"texts": []}', 422, '"texts" is empty'),
    (b"{}", 422, 'give "texts": [...] or "text": "..."'),
    (b'{"text": "a", "texts": ["b"]}', 422, 'give "texts": [...] or "text": "..."'),
    (b'{"text": "a", "top_k": 0}', 422, "top_k: Input should be greater than or equal to 1"),
    (b'{"text": "a", "colour": "red"}', 422, "colour: Extra inputs are not permitted"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 422, "9 texts in one request; at most 8"),
    (json.dumps({"text": "a" * 2001}).encode(), 422, "text 0 has 2001 characters; at most "
                                                     "2000 (--max-chars): it is refused"),
    # One byte over --max-body: the server has read the whole body when it refuses it (a
    # larger one is refused while the client still sends, and the reset loses the answer).
    (_body_of(MAX_BODY + 1), 413, "Payload too large"),
    (_body_of(MAX_BODY), 422, "at most 2000 (--max-chars)"),
])
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_serves_on(binary_server, body,
                                                                       status, message):
    got, answer = binary_server.request("/predict", body)
    assert got == status
    assert message in (answer["error"] if "error" in answer else answer["detail"])
    assert binary_server.predict({"text": "great film"})[0] == 200


def test_multi_class_and_the_ngram_stack_are_served_unchanged(stacked_checkpoint):
    server = Server(stacked_checkpoint)
    try:
        texts = ["the rocket reached orbit", "the striker scored a goal", "bank profit up"]
        status, body = server.predict({"texts": texts, "top_k": 2})
        assert status == 200
        _close(body["predictions"], _expected(stacked_checkpoint, texts, top_k=2))
        assert [p["label"] for p in body["predictions"]] == ["space", "sport", "money"]
        assert server.get("/info")[1]["model"]["stack"] is True
    finally:
        assert server.stop() == 0


def test_the_api_key_is_enforced_and_sigterm_stops_cleanly_with_a_request_in_flight(trained):
    server = Server(trained.last, "--api-key", "s3cret")
    try:
        assert server.predict({"text": "great"})[0] == 401
        assert server.predict({"text": "great"}, **{"X-API-Key": "wrong"})[0] == 401
        assert server.predict({"text": "great"}, **{"X-API-Key": "s3cret"})[0] == 200
        assert server.get("/health")[0] == 401
        # A large request in flight when SIGTERM arrives is still answered.
        answer: list = []
        payload = {"texts": ["great film " * 50] * 256}
        thread = threading.Thread(target=lambda: answer.append(
            server.predict(payload, **{"X-API-Key": "s3cret"})))
        thread.start()
        time.sleep(0.05)
    finally:
        code = server.stop()
    thread.join(timeout=60)
    assert code == 0
    assert answer and answer[0][0] == 200 and len(answer[0][1]["predictions"]) == 256


def test_an_unreadable_checkpoint_is_one_message_before_any_worker(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    result = subprocess.run([sys.executable, "-m", "gru_lightning.serve", str(bad)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "bad.ckpt" in result.stderr
