"""The `eval` section of an experiment config and its suites, typed and
checked once, when the evaluation starts."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

from kvp_jax import configs
from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation._suites import KINDS as SUITE_KINDS

# eval.metrics: the primary metrics are always computed; "fidelity" adds
# teacher-forced fidelity to the full cache (every suite but attention_cost)
# and "evicted_share" the evicted share at fixed budgets (attention_cost).
PRIMARY_METRICS = ("accuracy", "perplexity", "normalised_cost")
OPTIONAL_METRICS = ("fidelity", "evicted_share")
# A grid built without a config (Grid(...)) computes today's metrics only.
DEFAULT_METRICS = PRIMARY_METRICS
# Scorer names of the extra policies (eval.policies): "kvp_" + a label.
POLICY_NAME = re.compile(r"kvp_[A-Za-z0-9_]+")


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """One evaluation suite (see kvp_jax.evaluation._suites for the kinds).

  Attributes:
    kind: "ruler", "perplexity" or "attention_cost".
    name: the suite's label in the results (default: kind + index).
    sources: sample sources (kvp_jax.samples.sources), as mappings.
    max_new_tokens: tokens to generate: an int, a {task: int} mapping, or
      None for each task's own (ruler, attention_cost).
    text_files: perplexity suites: extra text files to score.
    context_tokens, continuation_tokens: how those files are cut.
    conversations, episodic, layer_profile, alpha, min_fraction,
      blend_weight, plain: the episodic suite's (see
      kvp_jax.evaluation._suites).
  """
  kind: str
  name: str = ""
  sources: tuple[Any, ...] = ()
  max_new_tokens: Any = None
  text_files: tuple[str, ...] = ()
  context_tokens: int = 1024
  continuation_tokens: int = 256
  conversations: Any = None
  episodic: Any = None
  layer_profile: str = ""
  alpha: float = 1.0
  min_fraction: float = 0.25
  blend_weight: Optional[float] = None
  plain: bool = True

  def __post_init__(self):
    if self.kind not in SUITE_KINDS:
      raise ValueError(f"unknown suite kind {self.kind!r}; known: "
                       f"{SUITE_KINDS}")
    for name in ("context_tokens", "continuation_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"suite {self.name or self.kind}: {name} must be "
                         f">= 1, got {getattr(self, name)}")

  @classmethod
  def from_mapping(cls, suite: Mapping[str, Any], index: int) -> SuiteConfig:
    """ValueError names the suite's field (config.eval.suites[i].field)."""
    if hasattr(suite, "to_dict"):
      suite = suite.to_dict()
    return configs.from_config_dict(cls, dict(suite),
                                    prefix=f"config.eval.suites[{index}]")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The evaluation grid (python -m kvp_jax.evaluate).

  Attributes:
    scorers: names (kvp_jax.scorers); "kvp" reads `policy`.
    policy: the exported policy ("" = <workdir>/policy.kvp; "shipped" =
      the policy shipped for the model, kvp_jax.policy.shipped_policy).
    policies: more exported policies evaluated in the same grid, as a
      mapping {scorer name: artifact path}, each name "kvp_" + a label
      (e.g. {"kvp_contrast": "experiments/results/ruler_agents_contrast/
      policy.kvp"}). They run after `scorers`, share every baseline cell
      (and its log rows) with "kvp", and each gets the paired verdicts
      against the best baselines and against each of `references`. Every
      policy must protect the same tokens.
    references: the policies every extra policy is also compared with,
      paired ("kvp" or names of `policies`; e.g. the shipped default beside
      the base an ablation changed). One that is not in a grid's results is
      skipped; a policy is not compared with itself.
    budgets: tokens kept per (layer, KV head), the protected ones included.
    protocol: "once" (the paper), "chunked" or "decode".
    allocation: "uniform" (the paper), "layer" or "model".
    chunk_size, decode_interval: of the chunked and decode protocols.
    batch_size: samples prefilled together.
    include_full: also run the uncompressed cache (the reference).
    suites: the suites, as mappings (SuiteConfig fields).
    output_dir: where results go ("" = <workdir>/eval).
    seed: the grid's PRNG seed (random scorers).
    metrics: the primary metrics (accuracy, perplexity, normalised_cost)
      and the optional ones: "fidelity" (teacher-forced agreement, KL and
      log-likelihood of the full cache's tokens, every suite but
      attention_cost) and "evicted_share" (attention_cost: evicted share of
      future importance at budgets 64..512). The default has all; leave the
      optional ones out to keep an older config's results.jsonl unchanged.
  """
  scorers: tuple[str, ...] = ("kvp", "random", "streaming_llm", "knorm",
                              "keydiff", "lagkv", "h2o", "tova", "snapkv",
                              "oracle")
  policy: str = ""
  policies: Any = dataclasses.field(default_factory=dict)
  references: tuple[str, ...] = ("kvp",)
  budgets: tuple[int, ...] = (64, 128, 256, 512, 1024)
  protocol: str = "once"
  allocation: str = "uniform"
  chunk_size: int = 512
  decode_interval: int = 32
  batch_size: int = 8
  include_full: bool = True
  suites: tuple[Any, ...] = ()
  output_dir: str = ""
  seed: int = 0
  metrics: tuple[str, ...] = PRIMARY_METRICS + OPTIONAL_METRICS

  def __post_init__(self):
    known = scorers_lib.available_scorers()
    for name in self.scorers:
      if name not in known:
        hint = (" (a policy's name goes in config.eval.policies, with its "
                "path)" if POLICY_NAME.fullmatch(name) else "")
        raise ValueError(f"config.eval.scorers: unknown scorer {name!r}; "
                         f"known scorers: {', '.join(known)}{hint}")
    if self.protocol not in eviction_lib.PROTOCOLS:
      raise ValueError(f"config.eval.protocol: {self.protocol!r} is not one "
                       f"of {eviction_lib.PROTOCOLS}")
    if self.allocation not in eviction_lib.ALLOCATIONS:
      raise ValueError(f"config.eval.allocation: {self.allocation!r} is not "
                       f"one of {eviction_lib.ALLOCATIONS}")
    for name in ("chunk_size", "decode_interval", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"config.eval.{name}: must be >= 1, got "
                         f"{getattr(self, name)}")
    unknown = sorted(set(self.metrics) - set(PRIMARY_METRICS +
                                             OPTIONAL_METRICS))
    if unknown:
      raise ValueError(f"config.eval.metrics: unknown {unknown}; known: "
                       f"{PRIMARY_METRICS + OPTIONAL_METRICS}")
    for b in self.budgets:
      if b < 1:
        raise ValueError(f"config.eval.budgets: {b} is not a positive "
                         "integer")
    object.__setattr__(self, "policies", _policy_pairs(self.policies))
    for name in self.references:
      if not isinstance(name, str) or not (
          name == "kvp" or POLICY_NAME.fullmatch(name)):
        raise ValueError(f"config.eval.references: {name!r} is not a "
                         "policy's scorer name: 'kvp' or 'kvp_' + a label")

  def policy_paths(self, default: str) -> dict[str, str]:
    """{scorer name: artifact path} of every policy in the grid: "kvp"
    (`policy`, else `default`) when it is one of the scorers, then
    `policies`."""
    out = {"kvp": self.policy or default} if "kvp" in self.scorers else {}
    out.update(self.policies)
    return out

  @property
  def all_scorers(self) -> tuple[str, ...]:
    """`scorers`, then the extra policies' names."""
    return tuple(self.scorers) + tuple(name for name, _ in self.policies)

  @classmethod
  def from_config(cls, config) -> EvalConfig:
    """The `eval` section of a whole config, its suites checked too."""
    ec = configs.from_config_dict(cls, config, section="eval")
    for i, suite in enumerate(ec.suites):
      SuiteConfig.from_mapping(suite, i)
    return ec

  def suite_dicts(self) -> list[dict]:
    """The suites as plain dicts (what build_suite reads)."""
    return [s.to_dict() if hasattr(s, "to_dict") else dict(s)
            for s in self.suites]


def _policy_pairs(policies) -> tuple[tuple[str, str], ...]:
  """config.eval.policies as ((name, path), ...), every entry checked."""
  if policies is None:
    return ()
  if isinstance(policies, tuple) and all(
      isinstance(p, tuple) and len(p) == 2 for p in policies):
    items = policies                    # Already normalised (a replace()).
  elif hasattr(policies, "items"):
    items = tuple(policies.items())
  else:
    raise ValueError("config.eval.policies: expected a mapping {scorer name:"
                     f" policy path}}, got {type(policies).__name__} "
                     f"{policies!r}")
  for name, path in items:
    if not isinstance(name, str) or not POLICY_NAME.fullmatch(name):
      raise ValueError(f"config.eval.policies: {name!r} is not a policy's "
                       "scorer name: use 'kvp_' + letters, digits or _ "
                       "(e.g. kvp_contrast)")
    if not isinstance(path, str) or not path:
      raise ValueError(f"config.eval.policies.{name}: expected the path of "
                       f"an exported policy, got {path!r}")
  return tuple((str(n), str(p)) for n, p in items)
