"""The attack suite: how an outsider, a scientist and a compromised trainer token would try to put a worse
model into production, against the running stack (real registry-proxy, trainer-api, Celery worker, MLflow,
Postgres, Redis). In every case production does not move, and the attempt is refused with 401/403 and a
reason, or recorded in the audit log and left to a human."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support.auth import ADMIN, SERVICE_TOKEN, bearer, principal_token
from tests.trainer.helpers import sms_subset, submit, text_spec, wait_job

pytestmark = pytest.mark.slow


def production(registry_url: str, name: str) -> str | None:
    return httpx.get(f"{registry_url}/models/{name}", headers=ADMIN, timeout=30).json()["production_version"]


def audit(registry_url: str, name: str, action: str | None = None) -> list[dict]:
    params = {"model": name, "limit": 500, **({"action": action} if action else {})}
    return httpx.get(f"{registry_url}/audit", params=params, headers=ADMIN, timeout=30).json()["items"]


@pytest.fixture(scope="module")
def guarded(trainer_url: str, registry_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model in production (trained by the admin on clean data) whose proposed golden set an approver has
    pinned; plus a scientist's and an approver's tokens."""
    name = f"guarded-{uuid.uuid4().hex[:8]}"
    clean = sms_subset(tmp_path_factory.mktemp("clean") / "clean.csv", rows=500, seed=3)
    r = submit(trainer_url, name, text_spec(clean, threshold=0.7))
    assert r.status_code == 202, r.text
    job = wait_job(trainer_url, r.json()["job_id"], timeout=400)
    assert job["status"] == "succeeded" and job["decision"] == "promoted", job
    golden = httpx.get(f"{registry_url}/models/{name}/golden-set", headers=ADMIN, timeout=30)
    assert golden.status_code == 200 and golden.json()["status"] == "proposed", golden.text
    approver_name, approver = principal_token(registry_url, "approver")
    r = httpx.put(f"{registry_url}/models/{name}/golden-set", headers=bearer(approver), timeout=30,
                  json={"sha256": golden.json()["sha256"], "reason": "the first run's test split, checked by hand"})
    assert r.status_code == 200 and r.json()["status"] == "pinned", r.text
    scientist_name, scientist = principal_token(registry_url, "scientist")
    return {"name": name, "version": job["model_version"], "golden": golden.json()["sha256"], "clean": clean,
            "approver": approver, "approver_name": approver_name, "scientist": scientist,
            "scientist_name": scientist_name}


def test_anonymous_upload_and_retrain_are_refused(guarded: dict, trainer_url: str, registry_url: str,
                                                  tmp_path: Path) -> None:
    """No token: the upload and the retrain (even one that sets the bar to zero) answer 401 with a reason,
    nothing is queued, production does not move."""
    flipped = _flipped(guarded["clean"], tmp_path)
    with flipped.open("rb") as fh:
        r = httpx.post(f"{trainer_url}/datasets", files={"file": ("poison.csv", fh, "text/csv")}, timeout=60)
    assert r.status_code == 401 and "token" in r.json()["detail"], r.text
    r = submit(trainer_url, guarded["name"], {"data": {"uri": str(flipped)}, "metric": {"threshold": 0}}, token=None)
    assert r.status_code == 401 and "token" in r.json()["detail"], r.text
    jobs = httpx.get(f"{trainer_url}/jobs", params={"model_name": guarded["name"]}, timeout=30).json()["jobs"]
    assert len(jobs) == 1  # only the admin's first job
    assert production(registry_url, guarded["name"]) == guarded["version"]


def test_a_scientist_cannot_lower_the_bar(guarded: dict, trainer_url: str, registry_url: str) -> None:
    """A scientist's retrain that changes the gate policy (threshold 0) is refused with 403 naming the policy
    and who may change it; the policy stays at its revision; a direct policy change is refused too."""
    before = httpx.get(f"{registry_url}/models/{guarded['name']}/policy", timeout=30).json()
    r = submit(trainer_url, guarded["name"], text_spec(guarded["clean"], threshold=0), token=guarded["scientist"])
    assert r.status_code == 403, r.text
    assert "approver" in r.json()["detail"] and "policy" in r.json()["detail"]
    r = httpx.put(f"{registry_url}/models/{guarded['name']}/policy", headers=bearer(guarded["scientist"]),
                  json={**{k: before[k] for k in ("metric", "higher_is_better", "margin")}, "threshold": 0,
                        "reason": "let me in"}, timeout=30)
    assert r.status_code == 403, r.text
    after = httpx.get(f"{registry_url}/models/{guarded['name']}/policy", timeout=30).json()
    assert after == before
    assert production(registry_url, guarded["name"]) == guarded["version"]


def test_label_flipped_data_is_trained_but_stopped_by_the_golden_set(guarded: dict, trainer_url: str,
                                                                     registry_url: str, tmp_path: Path) -> None:
    """A scientist uploads a label-flipped copy of the data and retrains on it. On its own (flipped) test split
    the challenger beats production easily; on the pinned golden set it is far worse, so it is not promoted:
    a pending decision shows both golden-set scores, the audit row names the scientist, production stays."""
    flipped = _flipped(sms_subset(tmp_path / "other.csv", rows=500, seed=4), tmp_path)
    with flipped.open("rb") as fh:
        r = httpx.post(f"{trainer_url}/datasets", files={"file": ("poison.csv", fh, "text/csv")},
                       headers=bearer(guarded["scientist"]), timeout=60)
    assert r.status_code == 201, r.text
    # The same bar as the policy (threshold 0.7): only the data changes, which a scientist may do.
    r = submit(trainer_url, guarded["name"], text_spec(r.json()["dataset_id"], threshold=0.7),
               token=guarded["scientist"])
    assert r.status_code == 202, r.text
    job = wait_job(trainer_url, r.json()["job_id"], timeout=400)
    assert job["status"] == "succeeded", job
    assert job["decision"] == "pending_approval", job
    assert "golden set" in job["reason"], job["reason"]
    assert production(registry_url, guarded["name"]) == guarded["version"]

    decision = httpx.get(f"{registry_url}/decisions/{job['decision_id']}", timeout=30).json()
    golden = decision["evidence"]["golden"]
    assert golden["sha256"] == guarded["golden"]
    own_split = decision["challenger_score"]
    on_golden, production_on_golden = golden["challenger"]["f1_macro"], golden["production"]["f1_macro"]
    assert own_split > 0.7 and on_golden < 0.5 < production_on_golden, decision
    gate = next(a for a in audit(registry_url, guarded["name"], "gate") if a["to_version"] == job["model_version"])
    assert gate["actor"] == "trainer" and gate["on_behalf_of"] == guarded["scientist_name"]
    assert gate["metrics"]["golden_challenger_score"] == pytest.approx(on_golden)
    tags = httpx.get(f"{registry_url}/models/{guarded['name']}/versions/{job['model_version']}", timeout=30).json()
    assert tags["tags"]["mlops.gate.outcome"] == "pending_approval"
    assert float(tags["tags"]["mlops.gate.golden_challenger_score"]) == pytest.approx(on_golden, rel=1e-4)


def test_a_gate_call_claiming_promoted_is_not_trusted(guarded: dict, registry_url: str, trainer_url: str) -> None:
    """With the trainer's own token, a forged gate report (outcome "promoted", perfect scores, no golden-set
    scores) does not move production: registry-proxy applies its policy and golden set, the report becomes a
    pending decision, and the audit log records the claimed outcome beside the real one."""
    jobs = httpx.get(f"{trainer_url}/jobs", params={"model_name": guarded["name"], "status": "succeeded"},
                     timeout=30).json()["jobs"]
    source = httpx.get(f"{trainer_url}/jobs/{jobs[0]['job_id']}", timeout=30).json()
    job_id = f"forged-{uuid.uuid4().hex[:8]}"
    body = {"job_id": job_id, "run_id": source["run_id"], "model_uri": source["model_uri"],
            "challenger_metrics": {"f1_macro": 1.0, "accuracy": 1.0}, "production_version": guarded["version"],
            "production_metrics": {"f1_macro": 0.1}, "trainer_outcome": "promoted"}
    r = httpx.post(f"{registry_url}/models/{guarded['name']}/gate", json=body, headers=bearer(SERVICE_TOKEN),
                   timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "pending_approval" and "golden set" in r.json()["reason"], r.json()
    assert production(registry_url, guarded["name"]) == guarded["version"]
    row = next(a for a in audit(registry_url, guarded["name"], "gate") if a["details"].get("job_id") == job_id)
    assert row["details"]["trainer_outcome"] == "promoted" and row["details"]["outcome"] == "pending_approval"


def test_an_approver_may_change_the_bar_and_it_is_recorded(guarded: dict, trainer_url: str,
                                                           registry_url: str) -> None:
    """The same policy change from an approver is accepted and recorded as a new policy revision in the
    approver's name (audit action "policy")."""
    before = httpx.get(f"{registry_url}/models/{guarded['name']}/policy", timeout=30).json()
    r = submit(trainer_url, guarded["name"], text_spec(guarded["clean"], threshold=0.75), token=guarded["approver"])
    assert r.status_code == 202, r.text
    after = httpx.get(f"{registry_url}/models/{guarded['name']}/policy", timeout=30).json()
    assert after["revision"] == before["revision"] + 1 and after["threshold"] == 0.75
    assert after["set_by"] == guarded["approver_name"]
    change = audit(registry_url, guarded["name"], "policy")[0]
    assert change["actor"] == guarded["approver_name"]
    assert change["metrics"]["before"]["threshold"] == before["threshold"]
    wait_job(trainer_url, r.json()["job_id"], timeout=400)  # leave no job running behind


def _flipped(source: Path, folder: Path) -> Path:
    frame = pd.read_csv(source)
    frame["label"] = frame["label"].map({"ham": "spam", "spam": "ham"})
    path = folder / f"flipped-{source.stem}.csv"
    frame.to_csv(path, index=False)
    return path
