r"""The held-out evaluation of the committed RULER-trained policies, in one
grid: every baseline cell is computed once and every policy is compared
with the same samples (paired).

  python -m kvp_jax.evaluate --config=experiments/heldout.py \
      --workdir=runs/heldout

The grid is ruler_agents.heldout_eval(): 209 RULER-style samples at 2k, 48
dialogues at 2k and 11 attention-cost samples; every query-free and
query-aware scorer and the oracle; budgets 64..1024. "kvp" is the
key-contrast agents of ruler_agents_contrast.py, "kvp_paper" the
paper-faithful agents of ruler_agents.py (both committed policies, K = 1;
the shipped default, K = 4, joins as "kvp_samples_k4" through
heldout_ablations.py); more
committed policies join through eval.policies (scorer names "kvp_<label>"),
each with its own paired verdicts, also against "kvp" and against the
shipped default "kvp_samples_k4" (eval.references; the method ablations
after samples_k4 change the default, so it is their base).

The results, and the per-sample log they are built from, are committed
under experiments/results/heldout/. The log is keyed by model, scorer,
cell and policy hash, so a rerun (on any machine) computes only the cells
that are missing there: a run stopped part-way continues where it
stopped, and adding a policy runs only that policy's cells. On 2 CPU cores
the whole grid takes hours (experiments/README.md says how many); on an
accelerator, minutes.
"""

from experiments import ruler_agents_contrast

RESULTS = "experiments/results"
# The shipped default's name in the grid (experiments/ruler_agents_k4.py,
# joined through heldout_ablations.py).
DEFAULT = "kvp_samples_k4"


def get_config():
  c = ruler_agents_contrast.get_config()
  c.eval.policy = f"{RESULTS}/ruler_agents_contrast/policy.kvp"
  c.eval.policies = {"kvp_paper": f"{RESULTS}/ruler_agents/policy.kvp"}
  c.eval.references = ["kvp", DEFAULT]
  c.eval.output_dir = f"{RESULTS}/heldout"
  return c
