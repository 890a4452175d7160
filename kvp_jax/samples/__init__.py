"""Samples: the record schema, task scoring and the offline generators.

Everything the evaluation and the trace job read is built here, offline and
seeded (no hub, no download):

  schema     Sample (context, question, answers, continuation, metadata),
             JSONL reading and writing, prompt text, token counting
  metrics    RULER's string-match scores
  scoring    a sample's metric and the score of a generated answer
  ruler      RULER-style synthetic tasks (needles, variable tracking, common
             and frequent words)
  ruler_ood  a second RULER-style template family, for the frozen test suite
  dialogues  chitchat-dataset conversations cut at a target length
  documents  long documents (pydoc topics, the Python docs) packed to a length
  haystacks  the noise and essay text that RULER-style haystacks are made of
  words      word lists for keys and values
  sources    a config's `sources` list -> samples

The runnable jobs that write samples or traces are in data_pipelines/.
"""

from kvp_jax.samples.schema import count_tokens
from kvp_jax.samples.schema import fit_count
from kvp_jax.samples.schema import iter_samples
from kvp_jax.samples.schema import parse_length
from kvp_jax.samples.schema import prompt_text
from kvp_jax.samples.schema import read_sample_files
from kvp_jax.samples.schema import read_samples
from kvp_jax.samples.schema import reference_continuation
from kvp_jax.samples.schema import Sample
from kvp_jax.samples.schema import sample_length
from kvp_jax.samples.schema import SampleError
from kvp_jax.samples.schema import TokenizerLike
from kvp_jax.samples.schema import write_samples
