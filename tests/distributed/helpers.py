"""Running a command as a job of N processes x D fake CPU devices
(launch.multiprocess) from a test."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def launch(command, num_processes: int, devices: int, timeout: float = 300):
  """Runs `python <command...>` as one job; returns (CompletedProcess,
  seconds). Raises AssertionError with the output if it fails."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  for k in ("KVP_NUM_PROCESSES", "KVP_PROCESS_ID", "JAX_COORDINATOR_ADDRESS",
            "XLA_FLAGS"):
    env.pop(k, None)
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, "-m", "launch.multiprocess",
       f"--num_processes={num_processes}", f"--devices_per_process={devices}",
       f"--timeout_s={timeout - 20}", "--grace_s=2", "--", sys.executable,
       *command], cwd=REPO, capture_output=True, text=True, timeout=timeout,
      env=env)
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
  return proc, time.monotonic() - start


def config_file(path: Path, body: str) -> Path:
  """A config file whose get_config() returns `body` (an expression)."""
  path.write_text("import sys\nsys.path.insert(0, %r)\n%s\n" % (
      str(REPO), "def get_config():\n  return " + body))
  return path
