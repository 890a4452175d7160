"""Scoring a sample's generated answer by the metric it names.

The metric functions are in `metrics`; this module picks a sample's metric
(its metadata, else its registered RULER-style task's, else by kind).
"""

from __future__ import annotations

from typing import Sequence

from kvp_jax.samples import ruler
from kvp_jax.samples.metrics import METRICS
from kvp_jax.samples.metrics import PERPLEXITY
from kvp_jax.samples.metrics import postprocess_prediction
from kvp_jax.samples.metrics import STRING_MATCH_ALL


def metric_of(sample) -> str:
  """The metric a sample is scored with.

  `metadata["metric"]` when set (every generator sets it; a user's JSONL may),
  else the registered task's metric, else "perplexity" for a sample with a
  continuation, else string_match_all.
  """
  metric = sample.metadata.get("metric")
  if metric:
    return metric
  if sample.task in ruler.TASKS:
    return ruler.TASKS[sample.task].metric
  if sample.continuation is not None:
    return PERPLEXITY
  return STRING_MATCH_ALL


def score_sample(sample, prediction: str) -> float:
  """Score of a generated answer (after RULER's clean-up) for one sample.

  Raises:
    ValueError: the sample is scored by perplexity or names an unknown metric.
  """
  metric = metric_of(sample)
  if metric not in METRICS:
    raise ValueError(f"sample {sample.id!r} is scored by {metric!r}, not by "
                     f"string matching (known: {', '.join(METRICS)})")
  return METRICS[metric](postprocess_prediction(prediction), sample.answers)


def mean_score(samples: Sequence, predictions: Sequence[str]) -> float:
  """Mean of score_sample over paired samples and predictions."""
  if len(samples) != len(predictions):
    raise ValueError(f"{len(samples)} samples but {len(predictions)} "
                     f"predictions")
  if not samples:
    raise ValueError("no samples to score")
  return sum(score_sample(s, p) for s, p in zip(samples, predictions)) / len(
      samples)
