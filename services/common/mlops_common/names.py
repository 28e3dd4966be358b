"""Names the services share on the wire and in MLflow, spelled once: run and version tags, artifact paths,
task types and the registry aliases. A service that writes one and a service that reads it import it from here.
"""

from __future__ import annotations

from typing import Final, Literal

# Task types (``ModelSpec.task``).
TEXT_CLASSIFICATION: Final = "text-classification"
TABULAR_REGRESSION: Final = "tabular-regression"
Task = Literal["text-classification", "tabular-regression"]

# Registry aliases.
PRODUCTION_ALIAS: Final = "production"
PREVIOUS_ALIAS: Final = "previous"

# Artifacts every trained run logs beside its model.
SPEC_ARTIFACT: Final = "spec.json"
REFERENCE_STATS_ARTIFACT: Final = "reference/reference_stats.json"


class Tag:
    """MLflow tags the stack writes on runs, experiments and model versions (all under ``mlops.``)."""

    # runs and experiments (the trainer)
    JOB_ID: Final = "mlops.job_id"
    MODEL_NAME: Final = "mlops.model_name"
    CODE_VERSION: Final = "mlops.code_version"
    CANDIDATE: Final = "mlops.candidate"
    BEST_CANDIDATE: Final = "mlops.best_candidate"
    ERROR: Final = "mlops.error"
    DATASET_SHA256: Final = "mlops.dataset_sha256"
    TEST_SPLIT_SHA256: Final = "mlops.test_split_sha256"
    GOLDEN_SHA256: Final = "mlops.golden_sha256"
    # model versions (registry-proxy)
    RUN_ID: Final = "mlops.run_id"
    VALIDATION: Final = "mlops.validation"
    VALIDATION_STATUS: Final = "mlops.validation_status"
    DECISION: Final = "mlops.decision"
    DECISION_ID: Final = "mlops.decision_id"
    PROMOTED_AT: Final = "mlops.promoted_at"
    PROMOTED_VIA: Final = "mlops.promoted_via"
    ROLLED_BACK_AT: Final = "mlops.rolled_back_at"
    # registered models (registry-proxy): the traffic split every predictor follows (mlops_common.rollout)
    ROLLOUT: Final = "mlops.rollout"
    GATE_PREFIX: Final = "mlops.gate."
    GATE_OUTCOME: Final = "mlops.gate.outcome"
    GATE_CHALLENGER_SCORE: Final = "mlops.gate.challenger_score"
