"""Synthetic trace stores whose importance is a known function of the keys.

A store's metadata says it was recorded as `tiny_config` says (the random
"tiny" decoder, the default recording settings), so that training accepts
it; its layout is its own (2 layers of 1 KV head of 8 dims, all global).
"""

import numpy as np

from experiments import common
from kvp_jax import traces as traces_lib
from kvp_jax import training


def make_store(path, *, num_traces=64, num_layers=2, head_dim=8, seed=0,
               nan_at=None, metadata=None):
  """Traces with importance_j = softplus(4 k_j . w_l) for prompt tokens
  (w_l a fixed unit vector per layer): learnable from keys alone.

  metadata: the store's metadata.json (default: what `tiny_config` expects).
  """
  rng = np.random.default_rng(seed)
  layout = traces_lib.StoreLayout(num_layers=num_layers, num_kv_heads=1,
                                  head_dim=head_dim, max_length=128,
                                  num_splits=1, kv_dtype="float32",
                                  layer_windows=(0,) * num_layers)
  if metadata is None:
    metadata = training.expected_store_metadata(tiny_config(path))
    metadata.pop("layout")
  store = traces_lib.TraceStore.create_or_resume(path, metadata, layout)
  w = rng.normal(size=(num_layers, head_dim))
  w /= np.linalg.norm(w, axis=1, keepdims=True)
  traces, infos = [], []
  for i in range(num_traces):
    p = int(rng.integers(40, 110))
    t = p + 4
    keys = rng.normal(size=(num_layers, 1, t, head_dim)).astype(np.float32)
    values = rng.normal(size=(num_layers, 1, t, head_dim)).astype(np.float32)
    imp = np.log1p(np.exp(4 * np.einsum("lkth,lh->lkt", keys, w)))
    imp[..., p:] = 0
    if nan_at == i:                 # A corrupt key: the scores become NaN.
      keys[0, 0, 5] = np.nan
    traces.append(traces_lib.Trace(
        tokens=rng.integers(3, 100, t).astype(np.int32), prompt_length=p,
        split_points=np.asarray([p], np.int32),
        importance=imp[:, :, None].astype(np.float32), keys=keys,
        values=values))
    infos.append({"id": f"t{i}", "task": "synthetic",
                  "split": "validation" if i % 4 == 0 else "train"})
  store.append(traces, infos)
  return store


def tiny_config(store_path, **train):
  c = common.base_config()
  c.model = common.model_config("tiny", source="random")
  c.traces.store = str(store_path)
  c.traces.kv_dtype = "float32"
  c.policy.update(hidden=32, feature_width=32, position_dim=8,
                  max_position=128, dtype="float32")
  c.input.update(batch_size=16, buckets=(64, 128))
  c.train.update(steps=150, learning_rate=3e-3, warmup_steps=10,
                 ema_start=20, ema_decay=0.9, eval_every=50,
                 checkpoint_every=50, log_every=10)
  c.train.update(train)
  return c
