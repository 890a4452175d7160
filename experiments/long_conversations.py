r"""EpiCache-style long-conversation QA: episodic caches on Gemma 3 270M.

Each conversation (about 4k tokens of chitchat with 4 planted facts, one
question each; kvp_jax.samples.long_conversations) is cut into windows of 4
utterances, embedded with the decoder's own input embeddings and clustered
into 4 episodes. Every episode gets its own cache: the conversation is
prefilled 512 tokens at a time and evicted to the budget after every block,
scored by the episode's medoid windows (2 per episode) read as SnapKV's
observation window; each question is routed to the nearest episode centroid
and answered through that cache (peak per head: budget + 512 slots, E
caches). Two suites: uniform budgets, and sensitivity-aware layer budgets
(keys' deviation under compression profiled once per model into
runs/layer_profiles/, shared by sensitivity**alpha). "kvp+medoid" blends the
quickstart's KVP policy with the medoid's attention (blend_weight). Run the
quickstart first (for its policy), then:

  python -m kvp_jax.evaluate --config=experiments/long_conversations.py \
      --workdir=runs/quickstart \
      --config.eval.output_dir=runs/quickstart/long_conversations

Departures from EpiCache: windows of the synthetic transcripts, not LoCoMo
sessions; the observation window is scored by SnapKV's pooled attention (as
the runtime's snapkv), not KVzip's max over queries; the layer profile
compares the keys of the last 128 tokens over a compressed vs a full cache
(EpiCache: a block-sparse mask), and budgets follow sensitivity**alpha with
a floor of a quarter of the budget (EpiCache: min-max normalised similarity).
The conversations are built from chitchat dialogues of every pool: a policy
trained on dialogue traces may have seen some of them.
"""

from experiments import common
from experiments import quickstart

CONVERSATIONS = {"num_conversations": 8, "target_length": 4096, "seed": 2000,
                 "num_facts": 4, "max_new_tokens": 16}
EPISODIC = {"num_episodes": 4, "utterances": 4, "medoids": 2,
            "embedding": "embedding", "route_by": "centroid", "seed": 0}
PROFILE = "runs/layer_profiles/gemma3_270m.json"


def episodic_suite(name: str, layer_profile: str = "", alpha: float = 1.0,
                   blend_weight: float | None = 0.5) -> dict:
  suite = {"kind": "episodic", "name": name,
           "conversations": dict(CONVERSATIONS), "episodic": dict(EPISODIC),
           "layer_profile": layer_profile, "alpha": alpha,
           "min_fraction": 0.25}
  if blend_weight is not None:
    suite["blend_weight"] = blend_weight
  return suite


def get_config():
  c = quickstart.get_config()
  c.eval = common.eval_config(
      suites=[episodic_suite("conversations_uniform"),
              episodic_suite("conversations_sensitive", layer_profile=PROFILE,
                             alpha=1.0)],
      scorers=["kvp", "snapkv", "keydiff"], budgets=[128, 256, 512],
      protocol="chunked", chunk_size=512, batch_size=8)
  return c
