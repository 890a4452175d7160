"""A process of tests/launch/test_multiprocess.py (not a test itself).

  python tests/launch/multiprocess_worker.py compute OUT_DIR
  python tests/launch/multiprocess_worker.py fail OUT_DIR

compute: joins the job (kvp_jax.distributed.initialize), then over a global
(data,) mesh of every process's devices: a sharded sum and one gradient step
of linear regression on 16 rows, each process supplying its rows
(process_shard) through host_local_to_global; gathers rows of
process_shard(10) with gather_rows; writes OUT_DIR/process_<i>.json.
fail: process 1 raises after joining; the others write their pid and sleep,
and would write OUT_DIR/survived_<i> if not stopped.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from kvp_jax import distributed  # pylint: disable=g-import-not-at-top

ROWS, FEATURES, LR = 16, 3, 0.1


def problem():
  import numpy as np
  rng = np.random.default_rng(0)
  x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32)
       + 0.1 * rng.normal(size=ROWS).astype(np.float32))
  w = np.full((FEATURES,), 0.3, np.float32)
  return x, y, w


def compute(out_dir):
  spec = distributed.initialize(timeout_s=60)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  rows = NamedSharding(mesh, P("data"))
  x, y, w = problem()
  mine = distributed.process_shard(ROWS)
  xs, ys = distributed.host_local_to_global(
      (x[mine.start:mine.stop], y[mine.start:mine.stop]), rows)
  w = jax.device_put(w, NamedSharding(mesh, P()))

  @jax.jit
  def step(w, x, y):
    loss, grad = jax.value_and_grad(
        lambda w: jnp.mean((x @ w - y) ** 2))(w)
    return w - LR * grad, loss, jnp.sum(x)

  new_w, loss, total = step(w, xs, ys)
  gathered = distributed.gather_rows(
      [{"item": i, "square": i * i, "by": jax.process_index()}
       for i in distributed.process_shard(10)])
  result = {
      "spec": None if spec is None else spec.source,
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "x_fully_addressable": xs.is_fully_addressable,
      "x_processes": sorted({d.process_index for d in xs.sharding.device_set}),
      "local_rows": [mine.start, mine.stop],
      "new_w": np.asarray(new_w).tolist(),
      "loss": float(loss),
      "sum": float(total),
      "gathered": gathered,
      "strided": list(distributed.process_shard(10, strided=True)),
      "primary": distributed.is_primary(),
  }
  distributed.sync("written")
  with open(os.path.join(out_dir, f"process_{jax.process_index()}.json"),
            "w", encoding="utf-8") as f:
    json.dump(result, f)


def fail(out_dir):
  distributed.initialize(timeout_s=60)
  import jax
  i = jax.process_index()
  if i == 1:
    raise RuntimeError("process 1 fails on purpose")
  with open(os.path.join(out_dir, f"pid_{i}"), "w", encoding="utf-8") as f:
    f.write(str(os.getpid()))
  time.sleep(60)
  open(os.path.join(out_dir, f"survived_{i}"), "w").close()


if __name__ == "__main__":
  {"compute": compute, "fail": fail}[sys.argv[1]](sys.argv[2])
