"""The `eval` section of an experiment config and its suites, typed and
checked once, when the evaluation starts."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from kvp_jax import configs
from kvp_jax import eviction as eviction_lib
from kvp_jax import scorers as scorers_lib
from kvp_jax.evaluation import _episodic_suite
from kvp_jax.evaluation import _ruler_suite
from kvp_jax.evaluation import _suites
from kvp_jax.evaluation._grid import OPTIONAL_METRICS
from kvp_jax.evaluation._grid import PRIMARY_METRICS
from kvp_jax.evaluation._policy_source import policy_pairs
from kvp_jax.evaluation._policy_source import POLICY_NAME
from kvp_jax.evaluation._policy_source import PolicySource
from kvp_jax.samples import frozen

# eval.metrics: the primary metrics are always computed; "fidelity" adds
# teacher-forced fidelity to the full cache (every suite but attention_cost)
# and "evicted_share" the evicted share at fixed budgets (attention_cost).
# A grid built without a config (Grid(...)) computes the primary ones only.
DEFAULT_METRICS = PRIMARY_METRICS
ROLES = ("dev", "test")


def default_scorers() -> tuple[str, ...]:
  """The shipped policy, every registered baseline (query-free, then
  query-aware) and the oracle (kvp_jax.scorers.family_of)."""
  return ("kvp",) + tuple(
      n for f in ("query_free", "query_aware", "oracle")
      for n in scorers_lib.scorers_in(f))


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """One evaluation suite (see kvp_jax.evaluation._suites for the kinds).

  Attributes:
    kind: a registered suite kind (kvp_jax.evaluation._suites.kinds()).
    name: the suite's label in the results (default: kind + index).
    sources: sample sources (kvp_jax.samples.sources), as mappings.
    max_new_tokens: tokens to generate: an int, a {task: int} mapping, or
      None for each task's own (ruler, attention_cost).
    text_files: perplexity suites: extra text files to score.
    context_tokens, continuation_tokens: how those files are cut.
    conversations, disjoint_from, episodic, layer_profile, calibration, alpha,
      min_fraction, blend_weight, plain, plain_protocols: the episodic
      suite's (see kvp_jax.evaluation._episodic_suite).
    ratios: the long_text suite's budgets as shares of each context (see
      kvp_jax.evaluation._long_text_suite).
    answers: the ruler suite's: "all" (every cell answers every sample) or
      "where_full_right" (compressed cells answer only where the full
      cache is right; kvp_jax.evaluation._ruler_suite).
  """
  kind: str
  name: str = ""
  sources: tuple[Any, ...] = ()
  max_new_tokens: Any = None
  text_files: tuple[str, ...] = ()
  context_tokens: int = 1024
  continuation_tokens: int = 256
  conversations: Any = None
  disjoint_from: Any = None
  episodic: Any = None
  layer_profile: str = ""
  calibration: Any = None
  alpha: Optional[float] = None
  min_fraction: float = 0.25
  blend_weight: Optional[float] = None
  plain: bool = True
  plain_protocols: tuple[str, ...] = ()
  ratios: tuple[float, ...] = ()
  answers: str = "all"

  def __post_init__(self):
    _suites.get_kind(self.kind)      # ValueError naming the known kinds.
    where = f"suite {self.name or self.kind}"
    _ruler_suite.check_answers(self.answers, f"{where}: answers")
    try:
      _episodic_suite.plain_protocols(
          {"plain_protocols": self.plain_protocols})
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
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
    scorers: names (kvp_jax.scorers); "kvp" reads `policy`. Default: the
      shipped policy, every registered baseline and the oracle.
    policy: the exported policy ("" = <workdir>/policy.kvp; "shipped" =
      the policy shipped for the model, kvp_jax.policy.shipped_policy).
    policies: more exported policies evaluated in the same grid, as a
      mapping {scorer name: artifact path, or {"path", "sha256", "commit"}
      (PolicySource)}, each name "kvp_" + a label that says what it is
      (e.g. {"kvp_contrast": "runs/contrast/policy.kvp"}). They run after
      `scorers`, share every baseline cell (and its log rows) with "kvp",
      and each gets the paired verdicts against the best baselines and
      against each of `references`. Every policy must protect the same
      tokens.
    references: the policies every extra policy is also compared with,
      paired ("kvp" or names of `policies`; e.g. the shipped default beside
      the base an ablation changed). One that is not in a grid's results is
      skipped; a policy is not compared with itself.
    scorer_options: {scorer name: {field: value}}: baselines built with
      other settings than their defaults (e.g. {"lagkv": {"lag": 64}};
      kvp_jax.scorers.get_scorer). A scorer's settings are part of its
      cells' identity (Scorer.identity), so rows made with others are never
      reused.
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
    compress_log: fold the per-sample log into samples.jsonl.gz when the
      evaluation ends (committed results; kvp_jax.evaluation._log).
    role: "dev" (results that may choose things) or "test" (frozen test
      suites, kvp_jax.samples.frozen: only a test config reads them, and
      for a named policy, `policy` set).
  """
  scorers: tuple[str, ...] = dataclasses.field(
      default_factory=default_scorers)
  policy: str = ""
  policies: Any = dataclasses.field(default_factory=dict)
  references: tuple[str, ...] = ("kvp",)
  scorer_options: Any = dataclasses.field(default_factory=dict)
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
  compress_log: bool = False
  role: str = "dev"

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
    object.__setattr__(self, "policies", policy_pairs(self.policies))
    object.__setattr__(self, "scorer_options",
                       _scorer_options(self.scorer_options, self.scorers))
    for name in self.references:
      if not isinstance(name, str) or not (
          name == "kvp" or POLICY_NAME.fullmatch(name)):
        raise ValueError(f"config.eval.references: {name!r} is not a "
                         "policy's scorer name: 'kvp' or 'kvp_' + a label")

  def policy_sources(self, default: str) -> dict[str, PolicySource]:
    """{scorer name: PolicySource} of every policy in the grid: "kvp"
    (`policy`, else `default`) when it is one of the scorers, then
    `policies`."""
    out = ({"kvp": PolicySource(self.policy or default)}
           if "kvp" in self.scorers else {})
    out.update(self.policies)
    return out

  @property
  def all_scorers(self) -> tuple[str, ...]:
    """`scorers`, then the extra policies' names."""
    return tuple(self.scorers) + tuple(name for name, _ in self.policies)

  @classmethod
  def from_config(cls, config) -> EvalConfig:
    """The `eval` section of a whole config, its suites and role checked
    too."""
    ec = configs.from_config_dict(cls, config, section="eval")
    for i, suite in enumerate(ec.suites):
      SuiteConfig.from_mapping(suite, i)
    ec.check_role()
    return ec

  def check_role(self) -> None:
    """ValueError unless frozen test files are read by a test config, and a
    test config names its policy."""
    if self.role not in ROLES:
      raise ValueError(f"config.eval.role: {self.role!r} is not one of "
                       f"{ROLES}")
    tests = [f for s in self.suite_dicts()
             for f in frozen.test_files(s.get("sources") or ())]
    if tests and self.role != "test":
      frozen.refuse_test_files(
          [{"kind": "jsonl", "paths": tests}], "config.eval.suites")
    if self.role == "test" and "kvp" in self.scorers and not self.policy:
      raise ValueError("config.eval.role = 'test' scores an already-chosen "
                       "policy: set config.eval.policy ('shipped' or an "
                       "exported policy)")

  def suite_dicts(self) -> list[dict]:
    """The suites as plain dicts (what build_suite reads)."""
    return [s.to_dict() if hasattr(s, "to_dict") else dict(s)
            for s in self.suites]


def _scorer_options(options, scorers) -> dict[str, dict[str, Any]]:
  """config.eval.scorer_options as {name: {field: value}}, each entry a
  scorer of the grid that accepts its options."""
  options = {} if options is None else options
  if not hasattr(options, "items"):
    raise ValueError("config.eval.scorer_options: expected a mapping "
                     f"{{scorer name: {{field: value}}}}, got {options!r}")
  out = {}
  for name, fields in options.items():
    where = f"config.eval.scorer_options.{name}"
    if name not in scorers:
      raise ValueError(f"{where}: {name!r} is not one of config.eval.scorers")
    fields = dict(fields.items()) if hasattr(fields, "items") else fields
    if not isinstance(fields, dict):
      raise ValueError(f"{where}: expected a mapping {{field: value}}")
    try:
      scorers_lib.get_scorer(name, **fields)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where}: {e}") from None
    out[str(name)] = fields
  return out
