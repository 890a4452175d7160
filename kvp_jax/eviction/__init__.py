"""Inference with eviction: prefill, generate and score through a budgeted,
physically evicted KV cache, for any scorer.

Protocols (`Eviction.protocol`):
  "once"     the paper's: prefill the whole context with a full cache, rank
             every (layer, KV head)'s tokens once, keep the top b, decode with
             the compacted cache (new tokens are appended, never evicted).
  "chunked"  prefill in chunks of `chunk_size`; after every chunk the cache
             is evicted back to b, so the cache never holds more than
             b + chunk_size tokens per head, whatever the context length.
  "decode"   "once", then during decoding the cache is evicted back to b
             whenever `decode_interval` new tokens have been appended, so it
             stays within b + decode_interval through long generations.
             Rules that read attention moments (RoCo, H2O) keep them running
             through the decode, every new query adding its attention
             (_moments); rules that read the prompt's last queries (SnapKV,
             TOVA) cannot evict while decoding.

Allocation (`Eviction.allocation`): "uniform" (every head keeps b), or one
total budget shared by the heads of a "layer" (b x kv_heads) or of the whole
"model" (b x layers x kv_heads), split by comparing the heads' calibrated
scores (`calibrate_scores`).

The protected tokens (`Eviction.protected`, a cache.Protected) count inside
b. What a scorer needs is a property of the scorer (`needs_prefill_attention`,
`needs_future`, `can_evict_while_decoding`); this package asks, never names
scorers. It knows nothing of suites, grids or reports (kvp_jax.evaluation).

  Eviction                         the budget, protocol, allocation
  prefill_context / Context        one full prefill shared by many evictions
  compress_context                 a Context's cache evicted to a budget
  prefill_compressed               prompts -> compressed cache (any protocol)
  generate_compressed              greedy decoding through it
  continuation_log_likelihood      teacher-forced scoring through it
  continuation_logits              teacher-forced logits through it (one
                                   forward pass over the continuation)
  layer_views / score_layers / evict_cache / calibrate_scores / EvictWhenFull
                                   the steps they are made of
  EvictWithMoments / initial_moments
                                   decode-time eviction with running
                                   attention moments

Episodic caches (EpiCache; _episodes, _episodic, _sensitivity):
  split_windows / embed_tokens (tfidf) / cluster_episodes / route
                                   a conversation's episodes, offline
  prefill_episodes / answer_questions
                                   one compressed cache per episode, scored
                                   by its medoid; questions routed to one
  KVzipMaxScorer / episode_scorer / EPISODE_SCORERS
                                   the in-episode scorers: "kvzip" (the
                                   paper's max attention, the default),
                                   "snapkv" (SnapKV's pooled mean)
  MedoidBlendScorer                KVP's score blended with medoid attention
  profile_sensitivity / layer_budgets / load_or_profile
                                   sensitivity-aware per-layer budgets
                                   (RULES: "paper", the default, or "power")
  matched_layer_budgets / uniform_total / layer_caps
                                   budgets that hold what the uniform cell
                                   of the same budget holds
  EpisodicSettings / answer_conversation / routing_accuracy(ies)
                                   one conversation's samples, text in,
                                   scored answers out
  answer_compressed                the plain baseline: one compressed cache
                                   of the conversation for every question
"""

from kvp_jax.eviction._runtime import compress_context
from kvp_jax.eviction._runtime import Context
from kvp_jax.eviction._runtime import continuation_log_likelihood
from kvp_jax.eviction._runtime import continuation_logits
from kvp_jax.eviction._runtime import generate_compressed
from kvp_jax.eviction._runtime import prefill_compressed
from kvp_jax.eviction._runtime import prefill_context
from kvp_jax.eviction._runtime import Prefilled
from kvp_jax.eviction._moments import EvictWithMoments
from kvp_jax.eviction._moments import initial_moments
from kvp_jax.eviction._spec import ALLOCATIONS
from kvp_jax.eviction._spec import Eviction
from kvp_jax.eviction._spec import PROTOCOLS
from kvp_jax.eviction._steps import calibrate_scores
from kvp_jax.eviction._steps import evict_cache
from kvp_jax.eviction._steps import EvictWhenFull
from kvp_jax.eviction._steps import score_layers
from kvp_jax.eviction._views import LAST_QUERIES
from kvp_jax.eviction._views import layer_views
from kvp_jax.eviction._episodes import cluster_episodes
from kvp_jax.eviction._episodes import embed_tokens
from kvp_jax.eviction._episodes import Episodes
from kvp_jax.eviction._episodes import kmeans
from kvp_jax.eviction._episodes import route
from kvp_jax.eviction._episodes import split_windows
from kvp_jax.eviction._episodes import tfidf
from kvp_jax.eviction._episodes import Window
from kvp_jax.eviction._episodes import window_of
from kvp_jax.eviction._episodic import answer_questions
from kvp_jax.eviction._episodic import EPISODE_SCORERS
from kvp_jax.eviction._episodic import episode_scorer
from kvp_jax.eviction._episodic import KVzipMaxScorer
from kvp_jax.eviction._episodic import MedoidBlendScorer
from kvp_jax.eviction._episodic import prefill_episodes
from kvp_jax.eviction._sensitivity import DEFAULT_ALPHA
from kvp_jax.eviction._sensitivity import layer_budgets
from kvp_jax.eviction._sensitivity import layer_caps
from kvp_jax.eviction._sensitivity import load_or_profile
from kvp_jax.eviction._sensitivity import matched_layer_budgets
from kvp_jax.eviction._sensitivity import profile_sensitivity
from kvp_jax.eviction._sensitivity import read_profile
from kvp_jax.eviction._sensitivity import RULES
from kvp_jax.eviction._sensitivity import rule_weights
from kvp_jax.eviction._sensitivity import uniform_total
from kvp_jax.eviction._sensitivity import window_caps
from kvp_jax.eviction._conversation import answer_compressed
from kvp_jax.eviction._conversation import answer_conversation
from kvp_jax.eviction._conversation import build_episodes
from kvp_jax.eviction._conversation import EpisodicSettings
from kvp_jax.eviction._conversation import routing_text
from kvp_jax.eviction._conversation import routing_accuracies
from kvp_jax.eviction._conversation import routing_accuracy
