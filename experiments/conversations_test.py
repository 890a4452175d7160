r"""EpiCache against compress-once and block-by-block baselines on a
long-conversation test suite: 40 conversations of 4k and 8k tokens, 5
questions each, about facts planted at varied depths.

  python -m kvp_jax.evaluate --config=experiments/conversations_test.py \
      --workdir=runs/conversations_test

Every question of a conversation is read from one compressed state
(kvp_jax.evaluation._episodic_suite). Methods, at budgets 1024 and 2048
tokens per head (where the full cache's lead was visible at 4k,
experiments/results/long_conversations/):
- the full cache;
- compress-once (protocol "once"): the whole conversation prefilled, then
  evicted once to the budget (peak: the whole conversation);
- block by block (protocol "chunked", EasyKV's 512-token stride): evicted
  after every block (peak: budget + 512);
- each with the shipped KVP policy, KeyDiff, SnapKV, TOVA and RoCo
  (EasyKV's ratios, statistics accumulated over the blocks), none of which
  sees the questions;
- "epicache": EpiCache at the paper's scale (4 episodes, 8 medoid
  windows of 4 utterances), block by block in 512-token blocks (the
  paper's code uses 2048: a departure that bounds the peak at budget +
  512), the paper's in-episode scorer (KVzip's max over the medoid's
  queries), windows and questions embedded as tf-idf of their token ids
  (over the conversation's windows) and each question sent to the episode
  of its nearest window (the best routing on dev: 79% of questions reach
  their fact's episode, against 52% for the paper's routing to the
  nearest centroid with the input-embedding mean, +27 points [+16, +38]
  over conversations, the best of 12 settings on those conversations;
  experiments/results/long_conversations/routing_dev.jsonl);
  "epicache+kvp": the same with the shipped KVP blended in.
Paired intervals resample conversations; EpiCache is compared with each
compress-once baseline (kvp_jax.evaluation._paired.against_compress_once)
and with the block-by-block ones, Holm-adjusted per family.

The conversations choose nothing: seed 2200, built from chitchat
dialogues that neither each other nor the dev conversations of the
routing choice (12 x 4k, seed 2100) use (each length's draw excludes the
dialogues of those before it, so the counts are fixed). The evaluation
log resumes conversation by conversation, the 4k ones first.
"""

from experiments import common
from experiments import ruler_agents_contrast

NUM_FACTS = 5
CONVERSATIONS = [
    {"num_conversations": 20, "target_length": length, "seed": 2200,
     "num_facts": NUM_FACTS, "max_new_tokens": 16}
    for length in (4096, 8192)]
# The routing choice's dev conversations (data_pipelines/routing_accuracy).
DEV = {"num_conversations": 12, "target_length": 4096, "seed": 2100,
       "num_facts": 8}
EPISODIC = {"num_episodes": 4, "utterances": 4, "medoids": 8,
            "embedding": "tfidf", "route_by": "window", "seed": 0,
            "scorer": "kvzip"}
SCORERS = ["kvp", "keydiff", "snapkv", "tova", "roco"]
BUDGETS = [1024, 2048]


def get_config():
  c = ruler_agents_contrast.get_config()       # The model and its inputs.
  conversations = [dict(s) for s in CONVERSATIONS]
  suite = {"kind": "episodic", "name": "conversations",
           "conversations": conversations, "disjoint_from": [DEV],
           "episodic": dict(EPISODIC), "blend_weight": 0.5,
           "plain_protocols": ["chunked", "once"]}
  c.eval = common.eval_config(
      suites=[suite], scorers=SCORERS, budgets=BUDGETS, policy="shipped",
      protocol="chunked", chunk_size=512, batch_size=1,
      output_dir="experiments/results/conversations_test", compress_log=True)
  c.eval.role = "test"
  return c
