r"""JAX's multi-controller runtime: one command started as several processes.

A long command (trace generation, training, evaluation) runs unchanged as one
process. Started as one of N processes (one per host, or one per accelerator),
it calls `initialize()` (or `initialize_from_flags()`) before touching JAX;
every process then runs the same program on its own local devices, and jitted
computations over a mesh of `jax.devices()` span all processes.

Joining is jax.distributed.initialize(), which given no arguments detects
the cluster itself (jax._src.clusters: SLURM srun steps, Open MPI mpirun,
Cloud TPU VM slices and TPUs on GKE, Kubernetes with the `kubernetes`
package, opt-in mpi4py) and reads JAX_COORDINATOR_ADDRESS and
JAX_LOCAL_DEVICE_IDS. This layer adds only:

  * explicit values, which win: the flags of `define_flags()`
    (--coordinator_address, --num_processes, --process_id,
    --local_device_ids), else KVP_NUM_PROCESSES, KVP_PROCESS_ID (else
    JOB_COMPLETION_INDEX of a Kubernetes indexed Job), JAX_COORDINATOR_ADDRESS
    and JAX_LOCAL_DEVICE_IDS: what the local launcher
    (`python -m launch.multiprocess`) sets. Checked before JAX starts;
  * --distributed (or KVP_DISTRIBUTED=1/0): auto (default) initializes only
    when explicit values say more than one process, else the process is alone
    and nothing is initialized (the command behaves as before). auto does not
    look for a managed cluster (whether one has several processes can take
    the TPU metadata server or the Kubernetes API): start srun, mpirun, TPU
    and Kubernetes jobs with --distributed=on, which calls
    jax.distributed.initialize() with no arguments (only flags given are
    passed on). off: alone, whatever the environment says;
  * gloo for cross-process collectives on CPU (unless
    JAX_CPU_COLLECTIVES_IMPLEMENTATION chose another, e.g. mpi), so the tests
    run 2 processes x 2 fake CPU devices on one machine;
  * in a job, an uncaught exception ends its process at once with status 1
    (not waiting for the others in JAX's shutdown barrier), so a launcher
    sees the failure and stops the rest.

Helpers for the commands: `is_primary()` (process 0 writes summaries, tables
and exports), `process_shard(n)` (the items of n this process handles),
`gather_rows(rows)` (every process's Python results, in process order),
`host_local_to_global(tree, shardings)` (each process's rows of a batch into
global arrays), `process_rows(sharding, n)` (the rows of a batch this
process's devices hold), `to_host(tree)` (global arrays as numpy on every
process), `writer_role()` (this process as "writer i of P" of a shared
directory) and `sync(name)` (a barrier).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import sys
from typing import Any, Sequence

import jax
import numpy as np

from kvp_jax import _locks

log = logging.getLogger(__name__)

ENV_NUM_PROCESSES = "KVP_NUM_PROCESSES"
ENV_PROCESS_ID = "KVP_PROCESS_ID"
ENV_DISTRIBUTED = "KVP_DISTRIBUTED"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"     # read by JAX itself too
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"   # read by JAX itself too
_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Spec:
  """How this process joins the others: the arguments of
  jax.distributed.initialize (None: not passed, JAX detects it).

  Attributes:
    source: "explicit" (flags or the launcher's variables) or "jax"
      (--distributed=on without them: JAX detects the cluster).
  """
  source: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None

  def kwargs(self) -> dict:
    return {k: v for k, v in (
        ("coordinator_address", self.coordinator_address),
        ("num_processes", self.num_processes),
        ("process_id", self.process_id),
        ("local_device_ids",
         None if self.local_device_ids is None else list(self.local_device_ids)),
    ) if v is not None}


def define_flags() -> None:
  """Defines --distributed, --coordinator_address, --num_processes,
  --process_id and --local_device_ids (absl). Safe to call more than once;
  a flag of the same name defined elsewhere (e.g. launch.multiprocess's
  --num_processes) is kept."""
  from absl import flags
  defs = {
      "distributed": lambda: flags.DEFINE_enum(
          "distributed", "auto", list(_MODES),
          "Multi-process runtime: auto (only explicit values: these flags or "
          "launch.multiprocess's variables), on (jax.distributed.initialize "
          "detects SLURM, Open MPI, TPU, Kubernetes), off (alone)."),
      "coordinator_address": lambda: flags.DEFINE_string(
          "coordinator_address", None,
          "host:port of process 0's coordinator (multi-process)."),
      "num_processes": lambda: flags.DEFINE_integer(
          "num_processes", None, "Processes in the job."),
      "process_id": lambda: flags.DEFINE_integer(
          "process_id", None, "This process's id, 0-based."),
      "local_device_ids": lambda: flags.DEFINE_list(
          "local_device_ids", None, "Accelerators this process uses (GPU ids)."),
  }
  for name, define in defs.items():
    if name not in flags.FLAGS:
      define()


def _int_env(env, name: str) -> int | None:
  value = env.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name}={value!r} is not an integer") from None


def _ids(value) -> tuple[int, ...] | None:
  if value in (None, "", []):
    return None
  if isinstance(value, str):
    value = value.split(",")
  try:
    return tuple(int(v) for v in value)
  except ValueError:
    raise ValueError(f"local_device_ids {value!r} are not integers") from None


def detect(mode: str | None = None, coordinator_address: str | None = None,
           num_processes: int | None = None, process_id: int | None = None,
           local_device_ids: Sequence[int] | str | None = None,
           environ: dict | None = None) -> Spec | None:
  """How this process joins a multi-process job, or None if it is alone.

  Explicit values win; without them, mode "on" leaves everything to JAX
  (Spec("jax") with only the flags given) and "auto" means alone.

  Args:
    mode: "auto", "on" or "off" (default: $KVP_DISTRIBUTED 1/0, else auto).
    coordinator_address, num_processes, process_id, local_device_ids:
      explicit values (flags); each falls back to its environment variable
      (KVP_NUM_PROCESSES, KVP_PROCESS_ID, else JOB_COMPLETION_INDEX,
      JAX_COORDINATOR_ADDRESS, JAX_LOCAL_DEVICE_IDS).
    environ: the environment (default os.environ); for tests.
  Raises:
    ValueError: explicit values that are incomplete or inconsistent.
  """
  env = os.environ if environ is None else environ
  if mode is None:
    mode = {"1": "on", "0": "off", "": "auto"}.get(
        env.get(ENV_DISTRIBUTED, ""), env.get(ENV_DISTRIBUTED))
  if mode not in _MODES:
    raise ValueError(f"distributed mode {mode!r} is not one of {_MODES} "
                     f"(${ENV_DISTRIBUTED}: 1, 0 or unset)")
  if mode == "off":
    return None
  n = num_processes if num_processes is not None else _int_env(
      env, ENV_NUM_PROCESSES)
  pid = process_id if process_id is not None else _int_env(env, ENV_PROCESS_ID)
  if pid is None and n is not None:
    pid = _int_env(env, "JOB_COMPLETION_INDEX")

  if n is None and pid is None:
    if mode == "on":              # JAX reads the JAX_* variables itself.
      return Spec("jax", coordinator_address or None,
                  local_device_ids=_ids(local_device_ids))
    return None
  if n is None:
    raise ValueError(f"process_id={pid} without num_processes "
                     f"(--num_processes or ${ENV_NUM_PROCESSES})")
  if n < 1:
    raise ValueError(f"num_processes={n} must be >= 1")
  if n == 1 and pid in (None, 0):
    return None                                    # Alone, said explicitly.
  if pid is None:
    raise ValueError(f"num_processes={n} without process_id "
                     f"(--process_id, ${ENV_PROCESS_ID} or "
                     "$JOB_COMPLETION_INDEX)")
  if not 0 <= pid < n:
    raise ValueError(f"process_id={pid} is not in [0, {n})")
  address = coordinator_address or env.get(ENV_COORDINATOR) or None
  if not address:
    raise ValueError(f"num_processes={n} without coordinator_address "
                     f"(--coordinator_address or ${ENV_COORDINATOR}, "
                     "host:port of process 0)")
  ids = _ids(local_device_ids) or _ids(env.get(ENV_LOCAL_DEVICE_IDS))
  return Spec("explicit", address, n, pid, ids)


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # A private API; assume not.
    return False


def initialize(mode: str | None = None, coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int] | str | None = None,
               timeout_s: int = 300) -> Spec | None:
  """Joins the other processes of a multi-process job, if there are any.

  Call it first, before anything uses JAX (devices, arrays, jit). Alone (see
  `detect`) it does nothing and returns None. Calling it again after a
  successful call does nothing.

  Args:
    mode, coordinator_address, num_processes, process_id, local_device_ids:
      see `detect`.
    timeout_s: how long to wait for every process to connect.
  Returns:
    The Spec used, or None when the process is alone.
  Raises:
    ValueError: incomplete explicit values (see `detect`).
    RuntimeError: JAX was already used in this process.
  """
  spec = detect(mode, coordinator_address, num_processes, process_id,
                local_device_ids)
  if spec is None:
    return None
  if jax.distributed.is_initialized():
    return spec
  if _backends_started():
    raise RuntimeError(
        "kvp_jax.distributed.initialize() must run before anything uses JAX "
        "(jax.devices(), an array, a jit); call it first in main()")
  if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(initialization_timeout=timeout_s, **spec.kwargs())
  _exit_on_uncaught_exception()
  log.info("joined %s", describe())
  return spec


def _exit_on_uncaught_exception() -> None:
  """Makes an uncaught exception end the process at once (status 1, after the
  traceback). Otherwise its exit waits in JAX's shutdown barrier for the
  other processes, which wait for it in their next collective: the job hangs
  until a heartbeat times out instead of failing, and a launcher (srun,
  launch.multiprocess) cannot stop the others."""
  hook = sys.excepthook

  def exit_now(kind, value, traceback):
    hook(kind, value, traceback)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access

  sys.excepthook = exit_now


def initialize_from_flags() -> Spec | None:
  """`initialize` with the values of the flags of `define_flags()`."""
  from absl import flags
  f = flags.FLAGS
  return initialize(f.distributed, f.coordinator_address, f.num_processes,
                    f.process_id, f.local_device_ids)


def describe() -> str:
  """'process i/N, L local / G global devices (platform)'."""
  return (f"process {jax.process_index()}/{jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} global "
          f"devices ({jax.default_backend()})")


def is_primary() -> bool:
  """Whether this is process 0, the one that writes summaries, tables,
  exports and other files that exist once per job."""
  return jax.process_index() == 0


def process_shard(n: int, strided: bool = False,
                  index: int | None = None, count: int | None = None) -> range:
  """The items of range(n) this process handles; the processes' ranges are
  disjoint and cover range(n) exactly once.

  Contiguous (default): process i of P gets [i*n//P, (i+1)*n//P), blocks that
  differ in size by at most one, in order (so concatenating the processes'
  results in process order gives the items in order). Strided: items i,
  i+P, i+2P, ... (balances work when cost grows with the index).

  Args:
    n: number of items.
    strided: the strided split instead of contiguous blocks.
    index, count: this process and the process count (default: JAX's).
  """
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  if n < 0 or count < 1 or not 0 <= index < count:
    raise ValueError(f"process_shard(n={n}) of process {index}/{count}")
  if strided:
    return range(index, n, count)
  return range(index * n // count, (index + 1) * n // count)


def _allgather_bytes(payload: bytes) -> list[bytes]:
  """Every process's bytes, in process order (two collectives: the lengths,
  then the payloads padded to the longest)."""
  from jax.experimental import multihost_utils
  data = np.frombuffer(payload, np.uint8)
  sizes = multihost_utils.process_allgather(np.array([data.size], np.int64))
  sizes = np.asarray(sizes).reshape(-1)
  padded = np.zeros(max(int(sizes.max()), 1), np.uint8)
  padded[:data.size] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [gathered[i, :int(s)].tobytes() for i, s in enumerate(sizes)]


def gather_rows(local_rows: Sequence[Any]) -> list[Any]:
  """Every process's rows, concatenated in process order, on every process.

  The rows (any picklable Python values: dicts of numbers and strings, numpy
  scalars) are pickled and exchanged with
  jax.experimental.multihost_utils.process_allgather, a collective of the
  JAX runtime (gloo on CPU, NCCL or ICI on accelerators): it needs no shared
  file system (TPU VMs and many clusters have none) and no extra service.
  Meant for results (metrics, table rows), not for bulk data: the payload
  goes through the devices once. Every process must call it, in the same
  order. One process alone gets its rows back (a copy) without a collective.
  """
  rows = list(local_rows)
  if jax.process_count() == 1:
    return rows
  out = []
  for payload in _allgather_bytes(pickle.dumps(rows)):
    out.extend(pickle.loads(payload))
  return out


def host_local_to_global(tree, shardings):
  """Each process's rows of a batch (numpy leaves, leading axis split over
  the processes by their data shards) into global jax.Arrays of the given
  shardings (a matching tree, or one sharding for every leaf):
  jax.make_array_from_process_local_data. Alone, it equals jax.device_put.
  """
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree_util.tree_map(jax.make_array_from_process_local_data,
                                  shardings, tree)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(shardings, x), tree)


def sync(name: str) -> None:
  """A barrier: returns when every process has reached sync(name). Nothing
  to do for one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def writer_role() -> _locks.Role:
  """This process as writer jax.process_index() of jax.process_count() (the
  role of its lock on a directory that every process writes)."""
  return _locks.Role(jax.process_index(), jax.process_count())


def process_rows(sharding: jax.sharding.Sharding, n: int) -> range:
  """The rows of a leading axis of size n that this process's devices hold
  under `sharding` (what it passes to `host_local_to_global`).

  Raises:
    ValueError: the process's rows are not one contiguous block.
  """
  slices = sharding.addressable_devices_indices_map((n,)).values()
  spans = sorted({s[0].indices(n)[:2] for s in slices})
  start, stop = spans[0][0], spans[0][1]
  for a, b in spans[1:]:
    if a > stop:
      raise ValueError(f"process {jax.process_index()} holds rows {spans} of "
                       f"{n}: not one block (order the mesh's devices by "
                       "process)")
    stop = max(stop, b)
  return range(start, stop)


def to_host(tree):
  """Every leaf as a numpy array on every process: a global jax.Array that
  spans other processes' devices is gathered
  (multihost_utils.process_allgather, a collective: every process must
  call it); other leaves are converted in place (jax.device_get)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)
  return jax.tree_util.tree_map(one, tree)
