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
               "baseline": "keydiff", "kind": "paired_every"}, **kw)


def test_worked_example():
  c = _comparison(num_samples=4, low=-1.0, high=3.0)   # Half-width 2.
  assert _sample_size.samples_needed(c, 1.0) == 16      # 4 * (2 / 1)^2.
  assert _sample_size.samples_needed(c, 3.0) == 2       # ceil(1.78) = 2.
  assert _sample_size.samples_needed(c, 8.0) == 2       # Never below 2.
  with pytest.raises(ValueError, match="not > 0"):
    _sample_size.samples_needed(c, 0.0)


def test_the_estimate_gives_the_width_asked_for():
  """Sized for half today's width from 30 samples, the same samples taken 4
  times over (the same spread, 120 samples) have a bootstrap interval of
  the width asked for."""
  rng = np.random.default_rng(0)
  a, b = rng.normal(1.0, 5.0, 30), np.zeros(30)
  d = paired_bootstrap(a, b, seed=1)
  target = (d.high - d.low) / 4
  n = _sample_size.samples_needed(
      _comparison(num_samples=30, low=d.low, high=d.high), target)
  assert n == 120
  wider = paired_bootstrap(np.tile(a, 4), np.tile(b, 4), seed=2)
  assert abs((wider.high - wider.low) / 2 / target - 1) < 0.05


def test_summary_and_the_kinds_read():
  rows = [
      _comparison(num_samples=10, low=0.0, high=4.0, budget="64"),   # 40.
      _comparison(num_samples=10, low=0.0, high=2.0, budget="128"),  # 10.
      _comparison(num_samples=10, low=0.0, high=1.0, budget="256",
                  baseline="tova"),                                   # 3.
      _comparison(num_samples=10, low=0.0, high=40.0, kind="paired"),
      _comparison(num_samples=10, low=float("nan"), high=1.0),
      _comparison(num_samples=10, low=0.0, high=9.0, metric="kl"),
  ]
  read = _sample_size.comparisons_of(rows, ["agreement"])
  assert len(read) == 3                  # paired_every, finite, agreement.
  (summary,) = _sample_size.summarise(read, 1.0)
  assert summary["median_needed"] == 10 and summary["max_needed"] == 40
  assert summary["worst"] == "b=64 vs keydiff"
  # Without "paired_every" rows, the best-of-family ones are read.
  only_best = [r for r in rows if r["kind"] == "paired"]
  assert _sample_size.comparisons_of(only_best) == only_best
  assert "| s | agreement | 10 | 3 | 10 | 40 | b=64 vs keydiff |" in (
      _sample_size.markdown([summary], 1.0))


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
  assert "| s | agreement | 10 | 1 | 40 | 40 |" in proc.stdout
  proc = _run(f"--results={tmp_path}", "--metrics=kl")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error:")
  assert "it has: agreement" in proc.stderr
  proc = _run(f"--results={tmp_path / 'missing'}")
  assert proc.returncode == 2 and "run python -m kvp_jax.evaluate" in (
      proc.stderr)
