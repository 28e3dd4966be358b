"""Writes the three notebooks of this folder with nbformat (edit the cells here, then run
`.venv/bin/python notebooks/build.py`; `--check` fails when a committed notebook differs from what this writes).

The notebooks talk to the stack through the Python client (`mlops_client`) and read run data with MLflow's
client; every URL, the token and the model come from the environment, so the same notebooks run against
`make dev`, the Docker stack or the test suite's stack (tests/docs/test_notebooks.py executes them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
import os

from mlops_client import Client

# Settings from the environment (the mlops CLI reads the same variables).
MODEL = os.environ.get("MLOPS_MODEL", "sms-spam")
SPEC_FILE = os.environ.get("MLOPS_SPEC_FILE")   # optional: a YAML/JSON spec (full or partial) sent with retrains
DATA_URI = os.environ.get("MLOPS_DATA_URI")     # optional: train on this dataset id, path or URL instead
os.environ.setdefault("MLOPS_TOKEN", "changethis")   # the make dev placeholder; set your own token

client = Client(timeout=60)
print("model:", MODEL, "| trainer-api:", client.url("trainer"), "| registry-proxy:", client.url("registry"),
      "| predictor:", client.url("predictor"))
print("acting as:", client.whoami())'''

SPEC = '''\
from pathlib import Path

import yaml


def retrain_spec() -> dict | None:
    """The spec overrides these notebooks send: MLOPS_SPEC_FILE's content, with MLOPS_DATA_URI as data.uri."""
    spec = yaml.safe_load(Path(SPEC_FILE).read_text()) if SPEC_FILE else {}
    if DATA_URI:
        spec.setdefault("data", {})["uri"] = DATA_URI
    return spec or None'''


def train_and_compare() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell(
            "# Train and compare\n\n"
            "Retrains the SMS spam model through trainer-api, then reads every candidate's MLflow run and "
            "compares bag-of-words, TF-IDF and Word2vec features with k-NN (and TF-IDF with logistic "
            "regression), as the spec `models/sms-spam.yaml` lists them.\n\n"
            "Settings come from the environment: `MLOPS_TOKEN`, `MLOPS_TRAINER_URL`, `MLOPS_REGISTRY_URL`, "
            "`MLOPS_PREDICTOR_URL`, `MLOPS_MODEL` (default `sms-spam`), and MLflow's own "
            "`MLFLOW_TRACKING_URI`, `MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`."),
        new_code_cell(SETUP),
        new_code_cell(SPEC),
        new_markdown_cell("## Retrain\n\nThe job trains each candidate as a nested MLflow run, keeps the best on "
                          "validation, and reports it to the gate, which decides whether it goes to production."),
        new_code_cell('''\
accepted = client.retrain(MODEL, spec=retrain_spec())
print("job", accepted.job_id, accepted.status)

seen = set()


def progress(job):
    if job.stage not in seen:
        seen.add(job.stage)
        print(f"{job.progress:4.0%}  {job.stage}")


job = client.wait_for_job(accepted.job_id, on_progress=progress, timeout=1800)
print("decision:", job.decision, "| version:", job.model_version, "| best:", job.best_candidate)
print("reason:", job.reason)
assert job.status == "succeeded", job.error'''),
        new_markdown_cell("## The candidates' runs in MLflow"),
        new_code_cell('''\
import mlflow
import pandas as pd

metric = job.spec["metric"]["name"]
tracking = mlflow.MlflowClient()
parent = tracking.get_run(job.run_id)
children = tracking.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{job.run_id}'")
runs = pd.DataFrame([{
    "candidate": r.data.params.get("candidate"),
    "featurizer": r.data.params.get("featurizer", "-"),
    "estimator": r.data.params.get("estimator"),
    f"val_{metric}": r.data.metrics.get(f"val_{metric}"),
    "seconds": r.data.metrics.get("training_duration_seconds"),
    "status": r.info.status,
} for r in children]).sort_values(f"val_{metric}", ascending=False)
assert len(runs) == len(job.spec["candidates"]), runs
runs'''),
        new_code_cell('''\
import json

test_scores = {k: v for k, v in parent.data.metrics.items() if k.startswith("test_")}
print(f"best candidate {job.best_candidate}, on the test split:")
print(json.dumps(test_scores, indent=1, sort_keys=True))'''),
        new_markdown_cell("## Featurizer × estimator"),
        new_code_cell('''\
import matplotlib.pyplot as plt

table = runs.pivot_table(index="featurizer", columns="estimator", values=f"val_{metric}")
ax = table.plot.bar(figsize=(7, 4), rot=0)
ax.set_ylabel(f"{metric} on the validation split")
ax.set_ylim(max(0.0, table.min().min() - 0.1), 1.0)
ax.axhline(job.spec["metric"].get("threshold", 0), color="grey", linestyle="--", label="gate threshold")
ax.legend(loc="lower right")
ax.set_title(f"{MODEL}: candidates of job {job.job_id[:8]}")
plt.tight_layout()
plt.show()
table'''),
    ])


def predict_and_feedback() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell(
            "# Predict and send feedback\n\n"
            "Asks the predictor for labelled messages of the SMS Spam Collection, sends the true labels back, "
            "and reads the live accuracy the predictor computes from that feedback (the figure the "
            "LiveQualityLow alert watches)."),
        new_code_cell(SETUP),
        new_code_cell('''\
import time

# The predictor follows the registry's production alias: wait until it serves a version of the model.
deadline = time.monotonic() + 300
while True:
    served = client.served_model(MODEL)
    if served.model_version:
        break
    assert time.monotonic() < deadline, f"the predictor serves no version of {MODEL}: {served.last_error}"
    time.sleep(2)
print(f"{MODEL} version {served.model_version} ({served.task}), classes {served.classes}")'''),
        new_code_cell('''\
from pathlib import Path

import pandas as pd

messages = pd.read_csv(Path("..") / "data" / "sms_spam.csv")
sample = pd.concat([messages[messages.label == "spam"].sample(20, random_state=7),
                    messages[messages.label == "ham"].sample(20, random_state=7)])
answer = client.predict(sample.text.tolist(), model=MODEL, probabilities=True)
sample = sample.assign(predicted=answer.predictions,
                       p_spam=[p.get("spam") for p in answer.probabilities or [{}] * len(sample)])
print("request", answer.request_id, "answered by version", answer.model_version)
pd.crosstab(sample.label, sample.predicted, rownames=["true"], colnames=["predicted"])'''),
        new_markdown_cell("## Feedback\n\nEach instance of the request gets its true label (`index` says which)."),
        new_code_cell('''\
results = [client.feedback(answer.request_id, label=label, index=i, model=MODEL)
           for i, label in enumerate(sample.label)]
last = results[-1]
print(f"{sum(r.correct for r in results)} of {len(results)} correct; "
      f"live accuracy over the last {last.window} feedbacks: {last.live_accuracy:.3f}")
assert last.window >= len(results) and last.live_accuracy is not None'''),
        new_code_cell('''\
# The same prediction cannot be labelled twice: the predictor answers 409 and the client raises ConflictError.
from mlops_client import ConflictError

try:
    client.feedback(answer.request_id, label=sample.label.iloc[0], index=0, model=MODEL)
except ConflictError as refused:
    print("refused:", refused)'''),
    ])


def govern() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell(
            "# Govern: decisions, promote, roll back, audit\n\n"
            "Retrains a challenger, shows the versions and their aliases side by side, promotes the challenger "
            "by hand (role approver), rolls it back, and reads the audit log and the DORA figures. Pending "
            "decisions, if any, are listed with how to approve them."),
        new_code_cell(SETUP),
        new_code_cell(SPEC),
        new_code_cell('''\
import pandas as pd


def versions() -> pd.DataFrame:
    detail = client.model(MODEL)
    metric = next((m for m in ("test_f1_macro", "test_mae") if any(m in v.metrics for v in detail.versions)), None)
    return pd.DataFrame([{"version": v.version, "aliases": ", ".join(v.aliases),
                          "gate": v.tags.get("mlops.gate.outcome"), metric: v.metrics.get(metric)}
                         for v in detail.versions])


versions()'''),
        new_markdown_cell("## A challenger\n\nThe gate promotes a challenger only if it beats production by more "
                          "than the policy's margin; otherwise it keeps production (or asks a human)."),
        new_code_cell('''\
production_before = client.model(MODEL).production_version
accepted = client.retrain(MODEL, spec=retrain_spec())
job = client.wait_for_job(accepted.job_id, timeout=1800)
print("version", job.model_version, "->", job.decision, "|", job.reason)
challenger = job.model_version
versions()'''),
        new_markdown_cell("## Pending decisions\n\nA decision waits for an approver when the gate cannot decide: "
                          "`client.approve(decision_id, comment=...)` promotes its version, `client.reject(...)` "
                          "refuses it (the same as the buttons in registry-proxy's `/ui`)."),
        new_code_cell('''\
pending = client.decisions(status="pending", model=MODEL)
pd.DataFrame([{"id": d.id, "version": d.version, "challenger": d.challenger_score,
               "production": d.production_score, "reason": d.reason} for d in pending])'''),
        new_markdown_cell("## Promote, then roll back\n\nThe predictor follows each move within seconds and "
                          "without a restart; a rollback puts the `previous` version back."),
        new_code_cell('''\
import time


def wait_served(version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.served_model(MODEL).model_version != version:
        assert time.monotonic() < deadline, f"the predictor did not switch to version {version}"
        time.sleep(1)
    print("the predictor serves version", version)


if client.model(MODEL).production_version != challenger:
    print(client.promote(MODEL, challenger, reason="promoted from the governance notebook"))
else:
    print("the gate already promoted version", challenger)
wait_served(challenger)'''),
        new_code_cell('''\
rolled_back = client.rollback(MODEL, reason="rolled back from the governance notebook")
print(rolled_back)
assert rolled_back.production_version == production_before
wait_served(production_before)
versions()'''),
        new_markdown_cell("## Audit log and DORA figures"),
        new_code_cell('''\
page = client.audit(model=MODEL, limit=10)
pd.DataFrame([{"time": e.time, "actor": e.actor, "action": e.action, "from": e.from_version,
               "to": e.to_version, "reason": e.reason} for e in page.items])'''),
        new_code_cell('''\
dora = client.dora(MODEL)
print(dora.model_dump_json(indent=1))'''),
    ])


NOTEBOOKS = {
    "01-train-and-compare.ipynb": train_and_compare,
    "02-predict-and-feedback.ipynb": predict_and_feedback,
    "03-govern.ipynb": govern,
}


def render(make: object) -> str:
    notebook = make()  # type: ignore[operator]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids: the files change only when a cell does
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, make in NOTEBOOKS.items():
        text = render(make)
        path = HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date, run {Path(__file__).name}: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
