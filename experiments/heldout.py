r"""The held-out (dev) grid of the committed RULER-trained policies: every
baseline cell is computed once and every policy is compared with the same
samples (paired).

  python -m kvp_jax.evaluate --config=experiments/heldout.py \
      --workdir=runs/heldout

The grid is ruler_agents.heldout_eval(): 209 RULER-style samples at 2k, 48
dialogues at 2k and 11 attention-cost samples; every query-free and
query-aware scorer and the oracle; budgets 64..1024. "kvp" is the shipped
policy (the key-contrast agents with K = 4 rankings per trace,
experiments/ruler_agents_k4.py); "kvp_contrast" the same agents with K = 1
(experiments/ruler_agents_contrast.py) and "kvp_paper" the paper-faithful
agents (experiments/ruler_agents.py), both pinned in experiments/policies.py.
More policies join through eval.policies (experiments/heldout_ablations.py,
heldout_cross.py), each with its own paired verdicts, also against "kvp" and
"kvp_contrast" (eval.references).

The results, and the per-sample log they are built from (samples.jsonl.gz),
are committed under experiments/results/heldout/. The log is keyed by
model, scorer, cell and policy hash, so a rerun (on any machine) computes
only the cells that are missing there: a run stopped part-way continues
where it stopped, and adding a policy runs only that policy's cells.
--report_only rebuilds the report from the log with no policy file.
"""

from experiments import policies
from experiments import ruler_agents_contrast

RESULTS = policies.RESULTS


def get_config():
  c = ruler_agents_contrast.get_config()
  c.eval.policy = "shipped"
  c.eval.policies = {
      "kvp_contrast": policies.pinned("ruler_agents_contrast"),
      "kvp_paper": policies.pinned("ruler_agents")}
  c.eval.references = ["kvp", "kvp_contrast"]
  c.eval.output_dir = f"{RESULTS}/heldout"
  c.eval.compress_log = True
  return c
