"""The notebooks in notebooks/ are exactly what their generator, notebooks/build.py, writes (so an edit made in
one place only is caught), there are the three of them, and they run: nbclient executes them in order, in a
python3 kernel of the project's venv, against the session's real stack (MLflow, registry-proxy, trainer-api
with a worker, a predictor for a model of this test), so a notebook that no longer works with the client or
the services fails here instead of in a reader's hands. The executed notebooks are saved in the session's log
directory, with their outputs, to look at after a run.

To stay fast the retrains use a spec file (MLOPS_SPEC_FILE) over a 300-row stratified sample of the SMS set,
with the four candidates of models/sms-spam.yaml and a smaller Word2vec.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from mlflow import MlflowClient
from mlops_client import Client
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.support import processes as p
from tests.support.auth import ADMIN_TOKEN
from tests.support.data import sms_subset, text_spec

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ORDER = ["01-train-and-compare.ipynb", "02-predict-and-feedback.ipynb", "03-govern.ipynb"]
# The notebooks only read MLflow (runs and their metrics): they get a user with MLflow's default READ and no
# grant, the predictor's, rather than the admin the test process itself acts as.
NOTEBOOK_MLFLOW_USER = "predictor"


def test_the_notebooks_are_what_their_generator_writes() -> None:
    result = subprocess.run([sys.executable, str(NOTEBOOKS / "build.py"), "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ORDER


def quick_candidates() -> list[dict[str, Any]]:
    """The candidates of models/sms-spam.yaml (the comparison notebook 01 is about), Word2vec made small."""
    spec = yaml.safe_load((REPO / "models" / "sms-spam.yaml").read_text())
    candidates: list[dict[str, Any]] = copy.deepcopy(spec["candidates"])
    for candidate in candidates:
        if candidate["featurizer"]["type"] == "word2vec":
            candidate["featurizer"]["params"] = {"vector_size": 20, "epochs": 5}
    return candidates


def text_of(cell: nbformat.NotebookNode) -> str:
    """What a reader sees under a code cell: its printed text and the plain-text form of its results."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def cell_with(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    cell: nbformat.NotebookNode = next(c for c in nb.cells if c.cell_type == "code" and source in c.source)
    return cell


def run(name: str, workdir: Path, log_dir: Path, model: str) -> nbformat.NotebookNode:
    """Executes one notebook in a fresh kernel; saves it, with its outputs, in ``log_dir`` whatever happens."""
    nb: nbformat.NotebookNode = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except CellExecutionError as failure:
        pytest.fail(f"{name} failed (executed copy in {log_dir}): {failure}")
    finally:
        nbformat.write(nb, log_dir / f"notebook-{model}-{name}")  # type: ignore[no-untyped-call]
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == [], f"{name}: {errors}"
    return nb


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_notebooks_run_in_order_against_the_stack(
        trainer_url: str, registry_url: str, mlflow_uri: str, mlflow_credentials: p.MlflowCredentials,
        predictor_factory: Callable[..., str], model_name: str, log_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """01 retrains and shows the four candidates side by side; 02 gets labelled predictions and sends feedback;
    03 retrains a challenger, promotes it and rolls it back, and both moves are in the registry, MLflow's
    aliases, the audit log and what the predictor serves afterwards."""
    data = sms_subset(tmp_path / "sms_small.csv", rows=300, seed=3)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(text_spec(data, threshold=0.5, candidates=quick_candidates())))
    predictor_url = predictor_factory(model_name)
    # Notebook 02 reads ../data/sms_spam.csv, as it does from notebooks/ in a checkout.
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    (tmp_path / "data").symlink_to(REPO / "data", target_is_directory=True)
    env = {"MLOPS_TOKEN": ADMIN_TOKEN, "MLOPS_TRAINER_URL": trainer_url, "MLOPS_REGISTRY_URL": registry_url,
           "MLOPS_PREDICTOR_URL": predictor_url, "MLOPS_MODEL": model_name, "MLOPS_SPEC_FILE": str(spec_file),
           "MLOPS_DATA_URI": str(data), "MLFLOW_TRACKING_URI": mlflow_uri,
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           **mlflow_credentials.env(NOTEBOOK_MLFLOW_USER)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel starts with the test process's environment
    with Client(trainer_url=trainer_url, registry_url=registry_url, predictor_url=predictor_url,
                token=ADMIN_TOKEN) as mlops:

        first = run(ORDER[0], workdir, log_dir, model_name)
        candidates = cell_with(first, "runs = pd.DataFrame")
        table = text_of(candidates)
        for word in ("bow", "tfidf", "word2vec", "knn", "logreg"):
            assert word in table, table
        assert table.count("FINISHED") == len(quick_candidates()), table  # one finished run per candidate
        retrained = text_of(cell_with(first, "client.wait_for_job"))
        assert "decision: promoted" in retrained, retrained
        chart = cell_with(first, "plt.show()")
        assert any("image/png" in o.get("data", {}) for o in chart.outputs), "no chart of the candidates"
        production = mlops.model(model_name).production_version
        assert production is not None

        second = run(ORDER[1], workdir, log_dir, model_name)
        predicted = text_of(cell_with(second, "client.predict("))
        assert f"answered by version {production}" in predicted and "spam" in predicted, predicted
        feedback = text_of(cell_with(second, "client.feedback(answer.request_id, label=label"))
        assert "of 40 correct" in feedback and "live accuracy" in feedback, feedback
        assert "refused:" in text_of(cell_with(second, "except ConflictError")), "a second feedback was not refused"

        third = run(ORDER[2], workdir, log_dir, model_name)
        detail = mlops.model(model_name)
        challenger = max((v.version for v in detail.versions), key=int)
        assert challenger != production, "03 registered no challenger"
        assert detail.production_version == production, "03 did not roll production back"
        assert MlflowClient(mlflow_uri).get_model_version_by_alias(model_name, "production").version == production
        audit = [(e.action, e.from_version, e.to_version) for e in mlops.audit(model=model_name).items
                 if "governance notebook" in (e.reason or "")]
        assert ("promote", production, challenger) in audit and ("rollback", challenger, production) in audit, audit
        assert mlops.served_model(model_name).model_version == production
        shown = "\n".join(text_of(c) for c in third.cells if c.cell_type == "code")
        assert f"the predictor serves version {challenger}" in shown, shown
        assert "rolled back from the governance notebook" in shown, shown
        print(json.dumps({"model": model_name, "production": production, "challenger": challenger,
                          "executed": [str(log_dir / f"notebook-{model_name}-{n}") for n in ORDER]}))
