"""The grain input pipeline over a trace store."""

from kvp_jax.data._pipeline import Element
from kvp_jax.data._pipeline import elements
from kvp_jax.data._pipeline import eval_batches
from kvp_jax.data._pipeline import InputConfig
from kvp_jax.data._pipeline import mixed_iterator
from kvp_jax.data._pipeline import padded_eval_chunks
from kvp_jax.data._pipeline import ReadElement
from kvp_jax.data._pipeline import SPLIT_MODES
from kvp_jax.data._pipeline import stack
from kvp_jax.data._pipeline import train_dataset
