"""The observed stack: the session's real services plus a few predictors of our own, scraped by a real
Prometheus, and brought into the states every panel and alert needs (trained, promoted, rolled back,
pending, failed, fed back, drifting)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from tests.observability.prometheus import Prometheus
from tests.support import data, jobs, registry
from tests.support import processes as p
from tests.support.auth import ADMIN

FAST = [{"featurizer": {"type": "tfidf"},
         "estimator": {"type": "logreg", "params": {"max_iter": 300, "C": 20.0}}}]
WEAK = [{"featurizer": {"type": "bow", "params": {"max_features": 2}},
         "estimator": {"type": "knn", "params": {"n_neighbors": 1}}}]
HAM = ["Are we still meeting for lunch tomorrow?", "Ok see you at home later", "I'll call you when I get there",
       "Can you pick up some milk on the way back", "Sorry I missed your call, talk tonight"]
SPAM = ["WINNER!! Claim your free prize now, call 09061701461", "Free entry to win cash, text WIN to 80086",
        "URGENT! Your mobile number has won a 2000 pound bonus, call now"]
# Text nothing like SMS: unknown tokens, very long messages.
SHIFTED = ["lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt " * 6,
           "quantum chromodynamics lattice gauge theory renormalization group asymptotic freedom " * 6]
DRIFT_WINDOW = 200
QUALITY_WINDOW = 20


def fares(path: Path, rows: int = 300, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0.5, 20, rows)
    passengers = rng.integers(1, 5, rows)
    fare = 3 + 2.5 * distance + 0.5 * passengers + rng.normal(0, 1, rows)
    pd.DataFrame({"distance_km": distance, "passengers": passengers, "fare": fare}).to_csv(path, index=False)
    return path


def text_spec(uri: Path, threshold: float, candidates: list[dict]) -> dict[str, Any]:
    return data.text_spec(uri, threshold, candidates, drift={"window_size": DRIFT_WINDOW})


def tabular_spec(uri: Path) -> dict[str, Any]:
    return {"task": "tabular-regression",
            "data": {"uri": str(uri), "feature_columns": ["distance_km", "passengers"], "target_column": "fare"},
            "metric": {"name": "mae", "higher_is_better": False, "threshold": 5.0},
            "candidates": [{"estimator": {"type": "ridge"}}], "drift": {"window_size": DRIFT_WINDOW}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class Stack:
    prometheus: Prometheus
    trainer_url: str
    registry_url: str
    mlflow_url: str
    base_env: dict[str, str]
    log_dir: Path
    data_dir: Path
    predictors: dict[str, p.Process] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # role -> model name
    urls: dict[str, str] = field(default_factory=dict)  # role -> predictor URL

    # --- services ---------------------------------------------------------------------------------------
    def start_predictor(self, role: str, model_name: str, port: int | None = None) -> str:
        env = {**self.base_env, "MODEL_NAME": model_name, "POLL_INTERVAL_SECONDS": "1",
               "DRIFT_INTERVAL_SECONDS": "1", "QUALITY_WINDOW_SIZE": str(QUALITY_WINDOW)}
        proc, url = p.uvicorn_service(f"obs-predictor-{role}", "predictor.main:app", env, self.log_dir, port=port)
        self.predictors[role], self.urls[role] = proc, url
        self.prometheus.add_target("predictor", url)
        return url

    def stop_all(self) -> None:
        for proc in self.predictors.values():
            proc.stop()

    # --- trainer and registry ---------------------------------------------------------------------------
    def retrain(self, model_name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return jobs.retrain(self.trainer_url, model_name, spec)

    def registry_post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.registry_url}{path}", json=body or {}, headers=ADMIN, timeout=30)
        assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"
        return response.json()

    def pending_decision(self, model_name: str) -> dict[str, Any]:
        response = httpx.get(f"{self.registry_url}/decisions", params={"status": "pending", "model": model_name},
                             timeout=10)
        assert response.status_code == 200, response.text
        (decision,) = [d for d in response.json() if d["model_name"] == model_name]
        return decision

    # --- predictors -------------------------------------------------------------------------------------
    def wait_served(self, role: str, version: str, timeout: float = 90) -> None:
        registry.wait_served(self.urls[role], version, timeout)

    def predict(self, role: str, instances: list[Any]) -> httpx.Response:
        return httpx.post(f"{self.urls[role]}/predict", json={"instances": instances}, timeout=30)

    def feedback(self, role: str, request_id: str, **truth: Any) -> None:
        response = httpx.post(f"{self.urls[role]}/feedback", json={"request_id": request_id, **truth},
                              headers=ADMIN, timeout=10)
        assert response.status_code == 200, response.text

    def real_messages(self, rows: int, seed: int) -> list[str]:
        """Messages like the ones the text model was trained on (from its own data file)."""
        frame = pd.read_csv(self.data_dir / "sms.csv").sample(rows, random_state=seed)
        return [str(t) for t in frame["text"]]

    def text_traffic(self, messages: list[str], rows: int, batch: int = 10) -> None:
        """``rows`` predictions cycling through ``messages``, ``batch`` per request."""
        cycle = [messages[i % len(messages)] for i in range(rows)]
        with httpx.Client(timeout=30) as client:
            for start in range(0, rows, batch):
                r = client.post(f"{self.urls['text']}/predict", json={"instances": cycle[start:start + batch]})
                assert r.status_code == 200, r.text

    def labelled_feedback(self, correct: bool, rows: int = QUALITY_WINDOW) -> None:
        """Predictions on known messages, then the true label (or the wrong one) as feedback."""
        truth = [(m, "ham") for m in HAM] + [(m, "spam") for m in SPAM]
        for i in range(rows):
            text, label = truth[i % len(truth)]
            answer = self.predict("text", [text]).json()
            predicted = answer["predictions"][0]
            wrong = "ham" if predicted == "spam" else "spam"
            self.feedback("text", answer["request_id"], label=predicted if correct else wrong)
