"""Predictor settings, read once from the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from mlops_common.settings import CommonSettings


class PredictorSettings(CommonSettings):
    # The registered model whose `production` alias this predictor serves.
    model_name: str = "sms-spam"
    # More models served beside MODEL_NAME, each at /models/{name}/predict: comma-separated names, or `*` for
    # every registered model that has a `production` alias (looked up again every MODELS_DISCOVERY_SECONDS).
    models: str = ""
    models_discovery_seconds: float = Field(60.0, gt=0)
    # Versions held in memory at once, the production versions included: the least recently used version
    # loaded for /models/{name}/versions/{v}/predict is unloaded first (a production version never is).
    max_loaded_versions: int = Field(8, ge=1)
    # The same bound in bytes of the versions' pickled size (0: no bound).
    max_loaded_bytes: int = Field(0, ge=0)
    # Fallback to the alias events: how often the alias is read from MLflow.
    poll_interval_seconds: float = Field(10.0, gt=0)
    # Adaptive micro-batching: concurrent requests are coalesced into one predict call of at most
    # MAX_BATCH_SIZE instances, waiting at most MAX_BATCH_WAIT_MS for requests already arriving.
    max_batch_size: int = Field(64, ge=1)
    max_batch_wait_ms: float = Field(2.0, ge=0)
    # Batches with more rows than this are scored in a worker thread instead of on the event loop.
    inline_predict_max_rows: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_instances: int = Field(1000, ge=1)
    # Drift scores are recomputed on this period from the incrementally updated window.
    drift_interval_seconds: float = Field(5.0, gt=0)
    # Fraction of batches fed to the drift monitor (1.0 = all).
    drift_sample_rate: float = Field(1.0, ge=0, le=1)
    # Overrides of the model spec's quality settings (None = the spec's, or the defaults).
    feedback_ttl_seconds: int | None = Field(None, ge=60)
    quality_window_size: int | None = Field(None, ge=1)
    # Keep the last production version in memory so a rollback swaps back at once.
    keep_previous_model: bool = True
    # Load a version as soon as an event names it `challenger`, so its promotion swaps at once.
    prefetch_challenger: bool = True
    # Shadow traffic (the rollout split's shadow): mirrored requests waiting for the shadow version beyond this
    # many are shed (counted, never queued behind production); the shadow scores in this many threads.
    shadow_queue_size: int = Field(256, ge=1)
    shadow_workers: int = Field(1, ge=1, le=8)
    # A version that failed to load is retried after this long (doubling on each failure, at most 10 min).
    load_retry_seconds: float = Field(30.0, gt=0)
    # Load versions in a separate loader process (the server only unpickles the result); false: in a thread.
    load_in_subprocess: bool = True
    # skops types trusted when loading a model, on top of the predictor's allowlist (loading.TRUSTED_TYPES):
    # a JSON list of fully qualified names. The list a model carries in its own MLmodel file is never used.
    model_trusted_types: list[str] = Field(default_factory=list)
    # Also load models saved as pickle or cloudpickle (they can run any code when loaded); skops only otherwise.
    model_allow_pickle: bool = False
    # Where downloaded model versions are kept (a temporary folder when empty).
    model_cache_dir: Path | None = None
    # Prefix of this predictor's Redis keys (predictions kept for feedback, quality window).
    redis_key_prefix: str = "mlops:predictor"
    # MLflow refuses to deserialise sklearn models (pickle or skops) unless this is allowed. The predictor
    # only loads versions from this stack's own registry, so it allows it unless told otherwise.
    allow_model_deserialization: bool = True

    @property
    def model_names(self) -> list[str]:
        """MODEL_NAME first, then the other names MODELS lists (without `*`)."""
        names = [self.model_name]
        for name in (n.strip() for n in self.models.split(",")):
            if name and name != "*" and name not in names:
                names.append(name)
        return names

    @property
    def discover_models(self) -> bool:
        return "*" in (n.strip() for n in self.models.split(","))


@lru_cache
def get_settings() -> PredictorSettings:
    return PredictorSettings()
