"""Sample sizes for paired intervals of a given width (_sample_size and
python -m kvp_jax.sample_size)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kvp_jax.evaluation import _sample_size
from kvp_jax.evaluation._bootstrap import paired_bootstrap

ROOT = Path(__file__).resolve().parents[2]


def _comparison(**kw):
  return dict({"suite": "s", "metric": "agreement", "budget": "64",
               "protocol": "once", "baseline": "keydiff", "method": "kvp",
               "kind": "paired_every"}, **kw)


def test_worked_example():
  c = _comparison(num_samples=4, low=-1.0, high=3.0)   # Half-width 2.
  # 4 * (2 / 1)^2 * 4 / 3 = 21.33; at the 90% upper bound of the variance,
  # x 3 / chi2(0.1, 3 degrees of freedom) = 3 / 0.5844: 109.5.
  assert _sample_size.samples_needed(c, 1.0) == 22
  assert _sample_size.samples_needed(c, 1.0, upper=True) == 110
  assert _sample_size.samples_needed(c, 8.0) == 2       # Never below 2.
  with pytest.raises(ValueError, match="not > 0"):
    _sample_size.samples_needed(c, 0.0)
  with pytest.raises(ValueError, match="at least 2"):
    _sample_size.samples_needed(dict(c, num_samples=1), 1.0)


def test_the_estimate_against_the_known_truth():
  """Differences drawn from a normal of known spread: a 95% interval of
  half-width h needs (1.96 sigma / h)^2 = 96 samples for sigma = 5, h = 1.
  Estimated from dev runs of 8 samples, the estimate is right on average
  and its 90% upper bound covers the truth in most runs."""
  rng = np.random.default_rng(0)
  truth = (1.96 * 5.0 / 1.0) ** 2
  estimates, covered = [], []
  for seed in range(200):
    d = paired_bootstrap(rng.normal(0.0, 5.0, 8), np.zeros(8), seed=seed,
                         num_resamples=2000)
    c = _comparison(num_samples=8, low=d.low, high=d.high)
    estimates.append(_sample_size.samples_needed(c, 1.0))
    covered.append(_sample_size.samples_needed(c, 1.0, upper=True) >= truth)
  assert abs(np.mean(estimates) / truth - 1) < 0.15, np.mean(estimates)
  assert 0.8 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_summary_and_the_kinds_read():
  rows = [
      _comparison(num_samples=10, low=0.0, high=4.0, budget="64"),   # 45.
      _comparison(num_samples=10, low=0.0, high=2.0, budget="128"),  # 12.
      _comparison(num_samples=10, low=0.0, high=1.0, budget="256",
                  baseline="tova"),                                   # 3.
      _comparison(num_samples=10, low=0.0, high=40.0, kind="paired"),
      _comparison(num_samples=10, low=float("nan"), high=1.0),
      _comparison(num_samples=10, low=0.0, high=9.0, metric="kl"),
      _comparison(num_samples=10, low=0.0, high=9.0, method="epicache+kvp"),
      # A suite with best-of-family rows only is read from those.
      _comparison(suite="t", num_samples=10, low=0.0, high=2.0,
                  kind="paired"),
  ]
  read = _sample_size.comparisons_of(rows, ["agreement"])
  assert [(r["suite"], r["budget"]) for r in read] == [
      ("s", "64"), ("s", "128"), ("s", "256"), ("t", "64")]
  summary, other = _sample_size.summarise(read, 1.0)
  assert summary["median_needed"] == 12 and summary["max_needed"] == 45
  assert summary["worst"] == "b=64 once vs keydiff"
  assert other["suite"] == "t" and other["max_needed"] == 12
  assert ("| s | agreement | 10 | 3 | 12 | 45 | 96 | b=64 once vs keydiff |"
          in _sample_size.markdown([summary], 1.0))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "kvp_jax.sample_size", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120, check=False)


def test_command(tmp_path):
  rows = [_comparison(num_samples=10, low=0.0, high=4.0)]
  (tmp_path / "verdicts.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  proc = _run(f"--results={tmp_path}", "--half_width=1")
  assert proc.returncode == 0, proc.stderr
  assert "| s | agreement | 10 | 1 | 45 | 45 | 96 |" in proc.stdout
  proc = _run(f"--results={tmp_path}", "--metrics=kl")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error:")
  assert "it has: agreement" in proc.stderr
  proc = _run(f"--results={tmp_path / 'missing'}")
  assert proc.returncode == 2 and "run python -m kvp_jax.evaluate" in (
      proc.stderr)
