"""kvp_jax.results_pages: the generated results pages, index and headline.

A tiny synthetic checkout (a manifest, a policies.py, a verdicts.jsonl written
by hand) checks the generated cells against hand-computed strings, that the
output is deterministic and that --check catches a stale file; the last test
checks the committed docs themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from kvp_jax import results_pages

REPO = Path(__file__).resolve().parents[1]
PAGE = "experiments/results/grid/README.md"
PNG = "experiments/results/grid/headline.png"


def _paired(method, family, baseline, suite, metric, budget, difference,
            low, high, verdict, n):
  return {"kind": "paired", "suite": suite, "metric": metric,
          "budget": str(budget), "protocol": "once", "allocation": "uniform",
          "method": method, "family": family, "baseline": baseline,
          "num_samples": n, "kvp_mean": 0.0, "baseline_mean": 0.0,
          "difference": difference, "low": low, "high": high,
          "verdict": verdict, "lower_is_better": False, "exact": False}


VERDICTS = [
    _paired("kvp", "query_free", "keydiff", "ruler", "agreement", 64,
            6.375, 4.788, 7.866, "better", 209),
    _paired("kvp", "query_free", "lagkv", "ruler", "agreement", 128,
            8.0, 7.0, 9.0, "better", 209),
    _paired("kvp", "query_aware", "tova", "ruler", "agreement", 64,
            -0.5, -1.25, 0.25, "not distinguishable", 209),
    _paired("kvp", "query_aware", "tova", "ruler", "agreement", 128,
            -2.004, -3.5, -1.0, "worse", 209),
    _paired("kvp", "query_free", "knorm", "dialogues", "agreement", 64,
            0.63, 0.23, 1.01, "better", 48),
    _paired("kvp", "query_free", "knorm", "dialogues", "agreement", 128,
            -0.18, -0.72, 0.36, "not distinguishable", 48),
    _paired("kvp", "query_aware", "h2o", "dialogues", "agreement", 64,
            -0.68, -0.99, -0.36, "worse", 48),
    _paired("kvp", "query_aware", "h2o", "dialogues", "agreement", 128,
            -1.01, -1.39, -0.64, "worse", 48),
    _paired("kvp", "query_free", "keydiff", "ruler", "retention", 64,
            73.585, 62.264, 84.906, "better", 53),
    _paired("kvp", "query_free", "keydiff", "ruler", "retention", 128,
            64.151, 49.057, 77.358, "better", 53),
    _paired("kvp_x", "kvp", "kvp", "ruler", "agreement", 64,
            0.123, 0.01, 0.3, "better", 209),
    _paired("kvp_x", "kvp", "kvp", "ruler", "agreement", 128,
            -0.05, -0.2, 0.1, "not distinguishable", 209),
    {"kind": "retention", "suite": "ruler", "scorer": "kvp", "budget": "64",
     "metric": "retention", "value": 100.0, "num_samples": 2},
]

MANIFEST = {
    "headline": {"dir": "grid", "command": "python -m make_grid"},
    "intro": ["Intro line."],
    "configs": {"b.py": "phrase b", "a.py": "phrase a"},
    "pages": [{
        "dir": "grid", "title": "Grid", "shows": "It shows.",
        "configs": ["experiments/a.py"], "commands": ["python -m make_grid"],
        "measured": "a test CPU, 2026-01-01", "policies": ["grid"],
        "tables": ["summary", "ablations"], "dev": True}],
}

POLICIES = '''"""Pins."""
COMMIT = "abc123"
RESULTS = "experiments/results"
SHA256 = {"grid": "00"}
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
  """A checkout with one results directory and two configs."""
  exp = tmp_path / "experiments"
  grid = exp / "results" / "grid"
  grid.mkdir(parents=True)
  for name in ("__init__.py", "common.py", "a.py", "b.py"):
    (exp / name).write_text("", encoding="utf-8")
  (exp / "policies.py").write_text(POLICIES, encoding="utf-8")
  (exp / "results" / "pages.json").write_text(json.dumps(MANIFEST),
                                              encoding="utf-8")
  (grid / "verdicts.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in VERDICTS), encoding="utf-8")
  (grid / "results.md").write_text("# tables\n", encoding="utf-8")
  (grid / "ruler.png").write_bytes(b"not really a png")
  (tmp_path / "README.md").write_text(
      "# T\n\n<!-- headline:start -->\nold\n<!-- headline:end -->\n\ntail\n",
      encoding="utf-8")
  return tmp_path


def _text(root: Path, path: str) -> str:
  return (root / path).read_text(encoding="utf-8")


def test_cells_equal_hand_computed_strings(root):
  results_pages.write(root)
  page = _text(root, PAGE)
  assert ("| agreement | best query-free (keydiff, lagkv) | 209 | "
          "+6.38 [+4.79, +7.87] ▲ | +8.00 [+7.00, +9.00] ▲ |") in page
  assert ("| agreement | best query-aware (tova) | 209 | "
          "-0.50 [-1.25, +0.25] = | -2.00 [-3.50, -1.00] ▼ |") in page
  assert ("| retention | best query-free (keydiff) | 53 | "
          "+73.58 [+62.26, +84.91] ▲ | +64.15 [+49.06, +77.36] ▲ |") in page
  # Every interval end below 1: three decimals.
  assert ("| kvp_x | 209 | +0.123 [+0.010, +0.300] ▲ | "
          "-0.050 [-0.200, +0.100] = |") in page
  assert "(dev: these samples chose the default)" in page
  assert ("git show abc123:experiments/results/grid/policy.kvp > "
          "experiments/results/grid/policy.kvp") in page
  assert "[results.md](results.md)" in page
  assert "* [ruler.png](ruler.png)" in page
  assert "* [headline.png](headline.png)" in page
  assert "python -m make_grid" in page


def test_headline_and_index(root):
  results_pages.write(root)
  readme = _text(root, "README.md")
  assert readme.startswith("# T\n\n<!-- headline:start -->\n")
  assert readme.endswith("<!-- headline:end -->\n\ntail\n")
  assert "old" not in readme
  assert ("| RULER-style: agreement | best query-free | 209 | "
          "+6.38 [+4.79, +7.87] ▲ | +8.00 [+7.00, +9.00] ▲ |") in readme
  assert ("| dialogues: agreement | best query-aware | 48 | "
          "-0.68 [-0.99, -0.36] ▼ | -1.01 [-1.39, -0.64] ▼ |") in readme
  assert ("| RULER-style: retention | best query-free | 53 | +73.58 "
          "[+62.26, +84.91] ▲ | +64.15 [+49.06, +77.36] ▲ |") in readme
  assert "**Dev**" in readme and "a test CPU, 2026-01-01" in readme
  assert "(experiments/results/grid/headline.png)" in readme
  index = _text(root, "experiments/README.md")
  lines = index.splitlines()
  # Manifest order; every config; the helpers left out.
  a = lines.index(
      "| [a.py](a.py) | phrase a | [grid](results/grid/README.md) |")
  b = lines.index("| [b.py](b.py) | phrase b | no committed results |")
  assert b < a
  assert "common.py" not in index and "policies.py" not in index
  png = (root / PNG).read_bytes()
  assert png.startswith(b"\x89PNG")
  assert results_pages.png_text(png)["Source"].startswith("sha256:")


def test_output_is_deterministic(root, tmp_path_factory):
  copy = tmp_path_factory.mktemp("copy") / "root"
  shutil.copytree(root, copy)
  first = results_pages.write(root)
  assert results_pages.write(root) == []     # Nothing left to write.
  assert results_pages.write(copy) == first
  for path in first:
    assert (root / path).read_bytes() == (copy / path).read_bytes(), path
  series = results_pages.figure_series(VERDICTS)
  digest = results_pages.figure_digest(series, "dev")
  assert (results_pages.render_figure(series, digest, "dev")
          == results_pages.render_figure(series, digest, "dev"))
  assert digest != results_pages.figure_digest(series, "test")


def test_a_test_headline_with_its_own_suite_names(root):
  """A headline declared test (its page not marked dev) is labelled test,
  in the text and the figure; the suites that play the RULER-style and
  dialogue rows may have other names ("ruler_ood")."""
  renamed = [dict(r, suite="ruler_ood") if r["suite"] == "ruler" else r
             for r in VERDICTS]
  renamed.append(dict(VERDICTS[0], suite="ruler", difference=99.0))
  (root / "experiments/results/grid/verdicts.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in renamed), encoding="utf-8")
  manifest = json.loads(json.dumps(MANIFEST))
  manifest["headline"]["suites"] = {"ruler": "ruler_ood"}
  manifest["pages"][0]["dev"] = False
  (root / "experiments/results/pages.json").write_text(
      json.dumps(manifest), encoding="utf-8")
  with pytest.raises(ValueError, match="split is 'dev' but its page"):
    results_pages.outputs(root)          # Not marked dev, not declared test.
  manifest["headline"]["split"] = "test"
  (root / "experiments/results/pages.json").write_text(
      json.dumps(manifest), encoding="utf-8")
  results_pages.write(root)
  readme = _text(root, "README.md")
  assert ("| RULER-style: agreement | best query-free | 209 | "
          "+6.38 [+4.79, +7.87] ▲ | +8.00 [+7.00, +9.00] ▲ |") in readme
  assert "+99.00" not in readme        # A suite "ruler" plays no role here.
  assert "**Test** (test: these samples chose nothing)" in readme
  assert "**Dev**" not in readme
  assert "best baselines (test)" in readme
  assert results_pages.stale(root) is None
  manifest["headline"]["suites"] = {"needles": "ruler_ood"}
  (root / "experiments/results/pages.json").write_text(
      json.dumps(manifest), encoding="utf-8")
  with pytest.raises(ValueError, match="headline 'suites' must map"):
    results_pages.outputs(root)


def test_check_names_the_first_stale_file(root):
  assert results_pages.stale(root) == PAGE
  results_pages.write(root)
  assert results_pages.stale(root) is None
  page = root / PAGE
  page.write_text(page.read_text(encoding="utf-8") + "edited\n",
                  encoding="utf-8")
  assert results_pages.stale(root) == PAGE
  results_pages.write(root)
  (root / PNG).unlink()
  assert results_pages.stale(root) == PNG
  results_pages.write(root)
  rows = VERDICTS[:2] + [dict(VERDICTS[2], difference=-0.25)] + VERDICTS[3:]
  (root / "experiments/results/grid/verdicts.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  assert results_pages.stale(root) == PAGE


def test_bad_manifest_names_the_problem(root):
  (root / "experiments" / "c.py").write_text("", encoding="utf-8")
  with pytest.raises(ValueError, match="no phrase for experiments/c.py"):
    results_pages.outputs(root)
  (root / "experiments" / "c.py").unlink()
  (root / "experiments/results/other").mkdir()
  with pytest.raises(ValueError,
                     match="no entry for experiments/results/other"):
    results_pages.outputs(root)


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, KVP_COMPILATION_CACHE="off")
  return subprocess.run(
      [sys.executable, "-m", "kvp_jax.results_pages", f"--checkout={root}",
       *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
      check=False)


def test_command_line_check_and_errors(root):
  stale = _cli(root, "--check")
  assert stale.returncode == 1
  assert stale.stderr.strip().splitlines() == [
      f"error: {PAGE} is stale; run python -m kvp_jax.results_pages"]
  assert not (root / PAGE).exists()           # --check writes nothing.
  assert _cli(root).returncode == 0
  assert _cli(root, "--check").returncode == 0
  (root / "README.md").write_text("# no markers\n", encoding="utf-8")
  bad = _cli(root, "--check")
  assert bad.returncode == 2
  assert len(bad.stderr.strip().splitlines()) == 1
  assert "headline:start" in bad.stderr


def test_generated_docs_are_up_to_date():
  """The committed pages, index, README headline and figure match the
  committed results (else: run python -m kvp_jax.results_pages)."""
  assert results_pages.stale(REPO) is None


def test_the_full_cache_table_is_task_by_length():
  from kvp_jax import results_pages  # pylint: disable=g-import-not-at-top
  row = lambda group, value, n, scorer="full": dict(
      suite="ruler", group=group, scorer=scorer, budget="full",
      metric="accuracy", value=value, num_samples=n)
  table = results_pages.full_cache_table([
      row("vt@1024", 100.0, 3), row("vt@32768", 0.0, 2),
      row("cwe@1024", 50.0, 3), row("mean", 75.0, 6),
      row("vt@1024", 10.0, 3, scorer="kvp")])
  assert table[0] == "| task | 1k | 32k |"
  assert table[2] == "| cwe | 50 (3) |  |"
  assert table[3] == "| vt | 100 (3) | 0 (2) |"
  assert table[4] == "| mean over the tasks measured | 75.0 | 0.0 |"
  assert results_pages.full_cache_table([row("mean", 1.0, 1)]) == []
