r"""Starts N processes of one command on this machine, as one JAX job.

  python -m launch.multiprocess --num_processes=2 --devices_per_process=2 -- \
      python -m kvp_jax.train --config=experiments/ruler_agents.py
  python -m launch.multiprocess --num_processes=4 --gpus_per_process=2 -- \
      python -m kvp_jax.evaluate ...        # a workstation with 8 GPUs

Each process gets the environment that kvp_jax.distributed reads:
KVP_NUM_PROCESSES, KVP_PROCESS_ID and JAX_COORDINATOR_ADDRESS
(127.0.0.1:<a free port>, the coordinator that process 0 starts), so the
command needs no extra flags; it only has to call
kvp_jax.distributed.initialize() first. Optionally per process:

  --devices_per_process=D  XLA_FLAGS=--xla_force_host_platform_device_count=D
                           (D fake CPU devices: tests, CPU-only machines);
  --gpus_per_process=G     CUDA_VISIBLE_DEVICES = the process's G GPUs (of
                           the parent's CUDA_VISIBLE_DEVICES if set, else
                           0, 1, ...): process i sees GPUs i*G .. i*G+G-1;
  --platform=cpu           JAX_PLATFORMS (e.g. cpu on a machine with GPUs).

Every line a process prints (stdout and stderr) is printed with the prefix
`[i] `. If a process fails (non-zero exit), the others are stopped (SIGTERM,
then SIGKILL after --grace_s) and the launcher exits with the failed
process's status; with --timeout_s, all are stopped after that many seconds
(exit 124). The launcher exits 0 only if every process did.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

from absl import app
from absl import flags

_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 2, "Processes to start.")
_DEVICES = flags.DEFINE_integer(
    "devices_per_process", None,
    "Fake CPU devices per process (XLA_FLAGS host platform device count).")
_GPUS = flags.DEFINE_integer("gpus_per_process", None,
                             "GPUs per process (CUDA_VISIBLE_DEVICES split).")
_PLATFORM = flags.DEFINE_string("platform", None,
                                "JAX_PLATFORMS for every process.")
_PORT = flags.DEFINE_integer("port", None,
                             "Coordinator port (default: a free one).")
_TIMEOUT = flags.DEFINE_float("timeout_s", None,
                              "Stop every process after this long (exit 124).")
_GRACE = flags.DEFINE_float("grace_s", 5.0,
                            "Seconds between SIGTERM and SIGKILL.")

_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def free_port() -> int:
  """A TCP port that was free on localhost a moment ago."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(index: int, count: int, address: str,
                devices_per_process: int | None = None,
                gpus_per_process: int | None = None,
                platform: str | None = None,
                base: dict | None = None) -> dict:
  """The environment of process `index` of `count`.

  Raises:
    ValueError: more GPUs asked for than the parent's CUDA_VISIBLE_DEVICES has.
  """
  env = dict(os.environ if base is None else base)
  env.update(KVP_NUM_PROCESSES=str(count), KVP_PROCESS_ID=str(index),
             JAX_COORDINATOR_ADDRESS=address, PYTHONUNBUFFERED="1")
  if devices_per_process:
    xla = re.sub(rf"{_DEVICE_COUNT}=\S*", "", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join(xla + [f"{_DEVICE_COUNT}={devices_per_process}"])
  if gpus_per_process:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    gpus = (visible.split(",") if visible
            else [str(i) for i in range(count * gpus_per_process)])
    if len(gpus) < count * gpus_per_process:
      raise ValueError(f"{count} processes x {gpus_per_process} GPUs, but "
                       f"CUDA_VISIBLE_DEVICES={visible!r}")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(
        gpus[index * gpus_per_process:(index + 1) * gpus_per_process])
  if platform:
    env["JAX_PLATFORMS"] = platform
  return env


def _pump(index: int, stream, out: TextIO, lock: threading.Lock) -> None:
  for line in iter(stream.readline, ""):
    with lock:
      out.write(f"[{index}] {line.rstrip(chr(10))}\n")
      out.flush()
  stream.close()


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
  """SIGTERM to every live process group, SIGKILL to what is left after
  grace_s."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    live = [p for p in procs if p.poll() is None]
    for p in live:
      try:
        os.killpg(p.pid, sig)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in live) and time.monotonic() < deadline:
      time.sleep(0.05)


def _status(code: int) -> int:
  return 128 - code if code < 0 else code     # -SIGTERM -> 143, as a shell.


def run(command: Sequence[str], num_processes: int,
        devices_per_process: int | None = None,
        gpus_per_process: int | None = None, platform: str | None = None,
        port: int | None = None, timeout_s: float | None = None,
        grace_s: float = 5.0, out: TextIO | None = None) -> int:
  """Runs `command` as processes 0..num_processes-1 of one job; returns the
  exit status: 0 if every process succeeded, else the first failure's (124
  on timeout), after the other processes were stopped.

  Raises:
    ValueError: an empty command or num_processes < 1.
  """
  if not command:
    raise ValueError("no command (put it after --)")
  if num_processes < 1:
    raise ValueError(f"num_processes={num_processes} must be >= 1")
  out = out or sys.stdout
  address = f"127.0.0.1:{port or free_port()}"
  lock = threading.Lock()
  procs, pumps = [], []
  try:
    for i in range(num_processes):
      env = process_env(i, num_processes, address, devices_per_process,
                        gpus_per_process, platform)
      p = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           errors="replace", start_new_session=True)
      procs.append(p)
      t = threading.Thread(target=_pump, args=(i, p.stdout, out, lock),
                           daemon=True)
      t.start()
      pumps.append(t)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = 0
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        status = _status(code)
        with lock:
          out.write(f"[launcher] process {i} exited with {status}; stopping "
                    "the others\n")
        break
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        status = 124
        with lock:
          out.write(f"[launcher] timeout after {timeout_s} s; stopping all\n")
        break
      time.sleep(0.05)
  finally:
    _stop(procs, grace_s)                         # Also on KeyboardInterrupt.
    for t in pumps:
      t.join(timeout=2)
  out.flush()
  return status


def main(argv):
  command = argv[1:]
  if not command:
    raise app.UsageError("give the command after --, e.g. "
                         "`python -m launch.multiprocess -- python -m ...`")
  # A SIGTERM to the launcher stops the processes too (run's finally).
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  sys.exit(run(command, _NUM_PROCESSES.value, _DEVICES.value, _GPUS.value,
               _PLATFORM.value, _PORT.value, _TIMEOUT.value, _GRACE.value))


if __name__ == "__main__":
  app.run(main)
