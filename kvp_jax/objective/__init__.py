"""The RL objective: Plackett-Luce rankings, the all-budget reward, RLOO."""

from kvp_jax.objective._plackett_luce import deterministic_order
from kvp_jax.objective._plackett_luce import gumbel_sort
from kvp_jax.objective._plackett_luce import log_prob
from kvp_jax.objective._reward import BudgetWeighting
from kvp_jax.objective._reward import evicted_mass_per_budget
from kvp_jax.objective._reward import expected_random_cost
from kvp_jax.objective._reward import normalised_cost
from kvp_jax.objective._reward import oracle_cost
from kvp_jax.objective._reward import random_normalised_cost
from kvp_jax.objective._reward import ranking_cost
from kvp_jax.objective._reward import reward
from kvp_jax.objective._reward import UNIFORM
from kvp_jax.objective._reward import WEIGHTINGS
from kvp_jax.objective._rloo import ADVANTAGE_CLIP
from kvp_jax.objective._rloo import ADVANTAGE_NORMS
from kvp_jax.objective._rloo import MIN_REWARD
from kvp_jax.objective._rloo import rloo_advantages
from kvp_jax.objective._rloo import rloo_loss
from kvp_jax.objective._rloo import STD_EPS
