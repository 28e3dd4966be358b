"""Back from a model version to its bytes: a snapshot missing from DATASETS_DIR (another host, a lost
volume) is restored from the MLflow run that trained on it (artifact ``dataset/<sha256>.<ext>``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlops_common import mlflow_utils
from mlops_common.names import Tag


def mlflow_restorer(tracking_uri: str) -> Callable[[str, Path], Path | None]:
    def restore(sha: str, dst: Path) -> Path | None:
        client = mlflow_utils.client(tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        if not experiments:
            return None
        # A training dataset (artifact dataset/), or a job's test split, which may be a golden set (test_split/).
        for tag, folder in ((Tag.DATASET_SHA256, "dataset"), (Tag.TEST_SPLIT_SHA256, "test_split")):
            runs = client.search_runs(experiments, f"tags.`{tag}` = '{sha}'", max_results=5,
                                      order_by=["attributes.start_time DESC"])
            for run in runs:
                for artifact in client.list_artifacts(run.info.run_id, folder):
                    if Path(artifact.path).name.startswith(sha):
                        return Path(client.download_artifacts(run.info.run_id, artifact.path, str(dst)))
        return None

    return restore
