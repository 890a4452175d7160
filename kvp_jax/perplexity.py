r"""Perplexity of a text file under the model.

  python -m kvp_jax.perplexity --text_file=/usr/share/common-licenses/GPL-3 \
      --max_tokens=1100 --skip=512

Tokenises the file with BOS, keeps the first `max_tokens` ids and scores the
predictions made at positions skip .. max_tokens-2. Prints one JSON line with
`perplexity`, `num_tokens` (predictions scored) and `nll` (mean, nats).
More kept tokens than the model's context (32768 for Gemma 3 270M) stop the
command with one `error:` line naming the limit, before anything runs.

With --budget, tokens 0..skip are the context, compressed to that many tokens
per head (--policy or --scorer), and the rest is read through the compressed
cache:

  python -m kvp_jax.perplexity --text_file=F --max_tokens=1100 --skip=512 \
      --budget=128 --policy=runs/ruler/policy.kvp
"""

import math
import time
from pathlib import Path

from absl import flags

from kvp_jax import _cli
from kvp_jax import eviction as eviction_lib
from kvp_jax import inference

_TEXT_FILE = flags.DEFINE_string("text_file", None, "Text file to score.",
                                 required=True)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 1024, "Tokens kept (BOS "
                                   "included); at least 2.", lower_bound=2)
_SKIP = flags.DEFINE_integer("skip", 0, "Predictions before this position are "
                             "context only, not scored.", lower_bound=0)
_cli.define_model_flags()
_cli.define_eviction_flags()


def main(argv):
  del argv
  path = Path(_TEXT_FILE.value)
  if not path.is_file():
    _cli.fail(f"--text_file {path} does not exist")
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    _cli.fail(f"--text_file {path} is not UTF-8 text: {e}")
  if _SKIP.value >= _MAX_TOKENS.value - 1:
    _cli.fail(f"--skip={_SKIP.value} leaves nothing to score with "
              f"--max_tokens={_MAX_TOKENS.value} (need skip <= max_tokens - 2)")
  _cli.check_file_flag("gguf", "GGUF file")
  checked = _cli.check_eviction_flags()  # Before the model loads.
  model = _cli.load_model_from_flags()
  scorer, eviction = _cli.eviction_from_flags(model, checked)
  tokens = model.tokenizer.encode(text, add_bos=True)[:_MAX_TOKENS.value]
  if _SKIP.value >= len(tokens) - 1:
    _cli.fail(f"--skip={_SKIP.value} leaves nothing to score: {path} gives "
              f"{len(tokens)} tokens (with --max_tokens={_MAX_TOKENS.value})")
  start = time.time()
  extra = {}
  if eviction is None:
    ll = inference.sequence_log_likelihood(model, tokens, _SKIP.value)
  else:
    skip = _SKIP.value
    lls, stats = eviction_lib.continuation_log_likelihood(
        model, scorer, eviction, [tokens[:skip + 1]], [tokens[skip + 1:]])
    ll = lls[0]
    extra = {"budget": eviction.budget, "scorer": scorer.name,
             "protocol": eviction.protocol, "cache_bytes": stats["cache_bytes"]}
  nll = float(-ll.mean())
  _cli.print_json({"perplexity": math.exp(nll), "nll": nll,
                   "num_tokens": int(ll.size), "context_tokens": len(tokens),
                   "skip": _SKIP.value, "text_file": str(path), **extra,
                   "seconds": round(time.time() - start, 2)})


if __name__ == "__main__":
  _cli.run(main)
