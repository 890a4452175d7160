r"""Long context: the shipped policy against every baseline from 4k to 32k
tokens, read as users read at length: chunked prefill, the cache evicted to
the budget after every 512-token chunk (it never holds more than budget +
512 slots per layer and KV head).

  python -m kvp_jax.evaluate --workdir=runs/long_dev \
      --config=experiments/long_context.py:split=dev,lengths=4096
  python -m kvp_jax.evaluate --workdir=runs/long_test \
      --config=experiments/long_context.py:split=test

Suites, per context length (4096, 8192, 16384, 32768):
  long_text  Python's documentation (the reST sources of Debian's
             python3.11-doc: `apt install python3.11-doc`) packed to the
             length; the last 256 tokens or so of each sample are the
             reference continuation (the same number at every length),
             teacher-forced through every cell: agreement and
             KL with the full cache and perplexity, whatever the model knows
             (every length has a suite that does not need a right answer).
             Budgets 256..2048 and the ratios 1/8 and 1/4 of each context.
  ruler      the RULER-style tasks the full cache still solves past 4k
             (experiments/results/ruler_full_cache: niah_single_1,
             niah_single_2, niah_multikey_1); greedy answers through the
             compressed caches only where the full cache is right.
Every query-free and query-aware scorer, RoCo and the oracle (a bound).

Splits. dev may choose (a position encoding, say); test reports a named,
already-chosen policy. No training source draws documents; dev documents are
the "heldout" pool (10% of the documents by a hash of their name), test
documents the rest, so the two never share a document; the RULER-style
samples use seeds 3100 (dev) and 3200 (test), which neither training (seed
0) nor the dev grid (2000) nor the full-cache table (3000) uses.

Config arguments (after the file's ":", comma-separated):
  split=dev|test     (default dev)
  lengths=a,b        context lengths (default all four)
  suites=a,b         long_text, ruler (default both)
  samples=N          samples per length and suite (RULER: per task);
                     default 4 (dev) and 8 (test), see "Sample counts"
  policy=PATH        the policy reported as "kvp" (default: the shipped one)
  protocol=P         chunked (default) or once: the whole context prefilled
                     with the full cache, then evicted once to each budget
                     (compress-once, where the full cache fits; one prefill
                     per sample serves every cell)
Cost on the 2-core CPU (AMD EPYC VM, float32, 2026-12-07), long_text at 4k,
67 cells a sample (11 scorers x 6 budgets, and the full cache): chunked 22
min for the first sample (compiling), then about 15 s a cell, 17 min a
sample; once 5.8 min for a sample, compiling included (peak RSS 4.7 GiB).
A chunked cell's prefill grows with the context, so a 32k sample takes
hours here: the chunked grid at 16k and 32k is an accelerator's job, and
the CPU runs compress-once there.
Sample counts. On the 2k dev grid (experiments/results/heldout), paired
agreement intervals of +-2 points against every baseline need a median 3
and at most 7 dialogues (9 at the 90% upper bound of the variance;
teacher-forced continuations of ~512 tokens), but a median 116 and up to
398 RULER-style samples (python -m kvp_jax.sample_size
--results=experiments/results/heldout, 2026-12-07). long_text scores 256
tokens a sample: halving a continuation at most doubles the variance of
its mean when its halves are not negatively correlated, so about 14
samples (18 at the upper bound) if documents spread as dialogues do. That is a guess from another
text, not a measurement: the dev run (4 per length) measures the spread at
each length, and the same command on its results, read at the 90% upper
bound (4 samples know their spread loosely), sets `samples` for the test
run before it starts (for ruler, divide by the 3 tasks: `samples` counts
per task). The RULER suites at length cannot reach +-2 on this CPU: their
intervals are reported as they are.
Each suite is one context length ("long_text_8k", "ruler_16k"): its paired
verdicts, Holm-adjusted per suite and metric, are that length's. Results:
experiments/results/long_context_<split>/. The log resumes batch by batch,
shortest contexts first.
"""

from experiments import common
from experiments import ruler_agents_contrast
from kvp_jax import configs

LENGTHS = ("4096", "8192", "16384", "32768")
SPLITS = {"dev": {"pool": "heldout", "seed": 3100, "samples": 4},
          "test": {"pool": "train", "seed": 3200, "samples": 8}}
SUITES = ("long_text", "ruler")
# The tasks the full cache answers at 4k and 8k (ruler_full_cache results).
RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_multikey_1")
RULER_MAX_NEW_TOKENS = 48
BUDGETS = [256, 512, 1024, 2048]
RATIOS = [0.125, 0.25]
CHUNK_SIZE = 512
PROTOCOLS = ("chunked", "once")
# The scored continuation: the same number of positions at every length
# (a quarter of 32k would be [8192, vocab] logits per cell).
CONTINUATION_TOKENS = 256


def suite_name(name: str, length: int) -> str:
  """"long_text_8k": one suite per length, so that every verdict (and its
  Holm family, per suite and metric) is of one context length."""
  return f"{name}_{length // 1024}k"


def suites(split: str, lengths, num_samples: int, names=SUITES) -> list:
  """The suites of one split, shortest contexts first."""
  s = SPLITS[split]
  out = []
  for length in sorted(int(n) for n in lengths):
    if "long_text" in names:
      out.append({
          "kind": "long_text", "name": suite_name("long_text", length),
          "ratios": RATIOS,
          "sources": [{"kind": "documents", "source": "python_doc",
                       "lengths": [length], "num_samples": num_samples,
                       "seed": s["seed"], "pool": s["pool"],
                       "continuation_tokens": CONTINUATION_TOKENS}]})
    if "ruler" in names:
      out.append(common.ruler_suite(
          RULER_TASKS, [length], num_samples, s["seed"],
          max_new_tokens=RULER_MAX_NEW_TOKENS,
          name=suite_name("ruler", length)) | {"answers": "where_full_right"})
  return out


def get_config(arg=None):
  args = configs.parse_config_arg(arg, split="dev", lengths=list(LENGTHS),
                                  suites=list(SUITES), samples=0,
                                  policy="shipped", protocol="chunked")
  split = args["split"]
  if split not in SPLITS:
    raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
  if args["protocol"] not in PROTOCOLS:
    raise ValueError(f"protocol: {args['protocol']!r} is not one of "
                     f"{', '.join(PROTOCOLS)}")
  unknown = sorted(set(args["suites"]) - set(SUITES))
  if unknown:
    raise ValueError(f"suites: unknown {unknown}; known: {', '.join(SUITES)}")
  num_samples = int(args["samples"]) or SPLITS[split]["samples"]
  c = ruler_agents_contrast.get_config()      # The model and input settings.
  c.eval = common.eval_config(
      suites=suites(split, args["lengths"], num_samples, args["suites"]),
      budgets=BUDGETS, protocol=args["protocol"], chunk_size=CHUNK_SIZE,
      batch_size=1, policy=args["policy"],
      output_dir=f"experiments/results/long_context_{split}",
      compress_log=True)
  c.eval.role = split
  return c
