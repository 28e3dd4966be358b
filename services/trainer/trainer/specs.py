"""The model specs in MODELS_DIR, as the API lists them (retrainable by name)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from mlops_common.spec import resolve_spec
from trainer.schemas import SpecProblem, SpecSummary


def spec_summaries(models_dir: Path) -> list[SpecSummary | SpecProblem]:
    """Each ``*.yaml`` spec with its essentials, or the first line of why it does not resolve."""
    specs: list[SpecSummary | SpecProblem] = []
    for path in sorted(models_dir.glob("*.yaml")):
        try:
            spec = resolve_spec(models_dir, path.stem)
        except (ValidationError, ValueError) as exc:
            specs.append(SpecProblem(name=path.stem, error=str(exc).splitlines()[0]))
            continue
        assert spec.metric is not None
        specs.append(SpecSummary(name=spec.name, task=spec.task, description=spec.description,
                                 data_uri=spec.data.uri, metric=spec.metric.model_dump(), schedule=spec.schedule,
                                 candidates=[c.label for c in spec.candidates or []]))
    return specs
