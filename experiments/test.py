r"""The frozen test suite: reports a named, already-chosen policy against
every baseline, and chooses nothing.

  python -m kvp_jax.evaluate --config=experiments/test.py --workdir=runs/test
  python -m kvp_jax.evaluate --workdir=runs/test \
      --config=experiments/test.py:policy=runs/x/policy.kvp

The samples are the frozen files of experiments/test_suites/ (their
manifest lists each with its sha256; python -m data_pipelines.
make_test_suite made them once): RULER-style retrieval in a template family
the training generator never uses (other needle sentences, questions, keys,
values and haystacks) at 2k and 4k tokens, and dialogues disjoint from the
training and dev ones. Every tool that chooses (trace recording, training,
sweeps, dev evaluations) refuses these files (kvp_jax.samples.frozen); only
a config with eval.role = "test" reads them, for a policy it names.

Config arguments (after the file's ":", comma-separated):
  policy=PATH   the policy reported as "kvp" (default: the shipped one)
  suites=a,b    only these suites (ruler_ood, dialogues)
  seeds=P1,P2   the same policy trained with other seeds (exported
                policies, e.g. runs/sweeps/method/seed43/policy.kvp from
                launch/method_ablations.py:families=seeds), each reported as
                "kvp_<its directory>" beside "kvp": the spread over seeds
Every query-free and query-aware scorer, RoCo and the oracle (a bound) run
at budgets 64..1024; the verdicts are Holm-adjusted per suite and metric
(kvp_jax.evaluation._verdicts). Teacher-forced agreement and KL cover every
sample; greedy answers through compressed caches are generated only where
the full cache answers right (answers="where_full_right"), the samples
answer retention reads. Results: experiments/results/test/. On 2 CPU cores
the whole grid takes hours; its log resumes where it stopped.
"""

from pathlib import Path

from experiments import common
from experiments import ruler_agents_contrast
from kvp_jax import configs

SUITES = "experiments/test_suites"


def test_suites() -> list[dict]:
  """The frozen suites, by name."""
  jsonl = lambda *names: [{"kind": "jsonl",
                           "paths": [f"{SUITES}/{n}" for n in names]}]
  return [
      # Compressed cells answer where the full cache is right (what answer
      # retention reads); agreement and KL cover every sample.
      {"kind": "ruler", "name": "ruler_ood", "answers": "where_full_right",
       "sources": jsonl("ruler_ood_2048.jsonl", "ruler_ood_4096.jsonl")},
      {"kind": "perplexity", "name": "dialogues",
       "sources": jsonl("dialogues_test.jsonl")},
  ]


def seed_policies(paths) -> dict[str, str]:
  """{"kvp_<directory>": path} of the seeds' exported policies."""
  out = {f"kvp_{Path(p).parent.name}": p for p in paths}
  if len(out) < len(paths):
    raise ValueError(f"seeds: two policies in directories of one name "
                     f"({', '.join(paths)}): each is named after its "
                     "directory")
  return out


def get_config(arg=None):
  args = configs.parse_config_arg(arg, policy="shipped", suites=[],
                                  seeds=[])
  c = ruler_agents_contrast.get_config()      # The model and input settings.
  suites = test_suites()
  if args["suites"]:
    known = [s["name"] for s in suites]
    unknown = sorted(set(args["suites"]) - set(known))
    if unknown:
      raise ValueError(f"suites: unknown {unknown}; known: {', '.join(known)}")
    suites = [s for s in suites if s["name"] in args["suites"]]
  c.eval = common.eval_config(
      suites=suites, budgets=[64, 128, 256, 512, 1024], batch_size=8,
      policy=args["policy"], output_dir="experiments/results/test",
      compress_log=True,
      policies=seed_policies(args["seeds"]))
  c.eval.role = "test"
  return c
