"""kvp_jax.distributed and launch.multiprocess: 2 processes x 2 fake CPU
devices on localhost (gloo) against 1 process x 4 devices; how a process
joins a job (explicit values, else JAX's own detection under
--distributed=on); a failing process stops the job."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from kvp_jax import distributed
from launch import multiprocess

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("multiprocess_worker.py"))


def _launch(mode, out_dir, num_processes, devices, timeout=240):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  for k in ("KVP_NUM_PROCESSES", "KVP_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    env.pop(k, None)
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, "-m", "launch.multiprocess",
       f"--num_processes={num_processes}", f"--devices_per_process={devices}",
       "--timeout_s=200", "--grace_s=2", "--", sys.executable, WORKER, mode,
       str(out_dir)],
      cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
  return proc, time.monotonic() - start


def _results(out_dir, n):
  return [json.loads((out_dir / f"process_{i}.json").read_text())
          for i in range(n)]


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
  out = tmp_path_factory.mktemp("two")
  proc, _ = _launch("compute", out, 2, 2)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc, _results(out, 2)


@pytest.fixture(scope="module")
def one_by_four(tmp_path_factory):
  out = tmp_path_factory.mktemp("one")
  proc, _ = _launch("compute", out, 1, 4)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return _results(out, 1)[0]


def test_two_processes_form_one_job(two_by_two):
  proc, results = two_by_two
  for i, r in enumerate(results):
    assert r["spec"] == "explicit"
    assert (r["process_index"], r["process_count"]) == (i, 2)
    assert (r["device_count"], r["local_device_count"]) == (4, 2)
    assert r["primary"] == (i == 0)
    # The batch really spans both processes.
    assert not r["x_fully_addressable"]
    assert r["x_processes"] == [0, 1]
  assert [r["local_rows"] for r in results] == [[0, 8], [8, 16]]
  # Every output line carries its process's prefix.
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert any(l.startswith("[0] ") for l in lines)
  assert any(l.startswith("[1] ") for l in lines)
  assert all(l.startswith(("[0] ", "[1] ", "[launcher] ")) for l in lines)


def test_sharded_step_matches_one_process(two_by_two, one_by_four):
  _, results = two_by_two
  single = one_by_four
  assert single["spec"] is None                   # Alone: no initialize.
  assert (single["process_count"], single["device_count"]) == (1, 4)
  # The numpy reference of the worker's step.
  sys.path.insert(0, str(Path(WORKER).parent))
  import multiprocess_worker as w                 # pylint: disable=g-import-not-at-top
  x, y, w0 = w.problem()
  grad = 2 * x.T @ (x @ w0 - y) / len(y)
  expected = w0 - w.LR * grad
  np.testing.assert_allclose(single["new_w"], expected, rtol=1e-5)
  assert single["sum"] == pytest.approx(float(x.sum()), rel=1e-5)
  for r in results:                               # Same on both processes.
    np.testing.assert_allclose(r["new_w"], single["new_w"], rtol=1e-6)
    assert r["loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert r["sum"] == pytest.approx(single["sum"], rel=1e-6)


def test_gather_rows_and_shards(two_by_two, one_by_four):
  _, results = two_by_two
  for r in results:
    assert [row["item"] for row in r["gathered"]] == list(range(10))
    assert [row["square"] for row in r["gathered"]] == [i * i for i in range(10)]
    assert [row["by"] for row in r["gathered"]] == [0] * 5 + [1] * 5
  assert results[0]["strided"] == [0, 2, 4, 6, 8]
  assert results[1]["strided"] == [1, 3, 5, 7, 9]
  assert [row["by"] for row in one_by_four["gathered"]] == [0] * 10


def test_failing_process_stops_the_job(tmp_path):
  proc, seconds = _launch("fail", tmp_path, 2, 1)
  assert proc.returncode != 0
  assert "process 1 fails on purpose" in proc.stdout
  assert "[launcher] process 1 exited with 1" in proc.stdout
  assert seconds < 50                       # Process 0 sleeps 60 s if left.
  assert not (tmp_path / "survived_0").exists()
  pid = int((tmp_path / "pid_0").read_text())
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)


@pytest.mark.parametrize("n", [0, 1, 5, 7, 16, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
@pytest.mark.parametrize("strided", [False, True])
def test_process_shard_covers_every_item_once(n, count, strided):
  shards = [distributed.process_shard(n, strided, i, count)
            for i in range(count)]
  items = sorted(i for s in shards for i in s)
  assert items == list(range(n))
  sizes = [len(s) for s in shards]
  assert max(sizes) - min(sizes) <= 1
  if not strided:                  # Contiguous blocks, in process order.
    assert [i for s in shards for i in s] == list(range(n))


def test_process_shard_rejects_bad_index():
  with pytest.raises(ValueError):
    distributed.process_shard(4, index=2, count=2)


def test_alone_in_process():
  assert distributed.process_shard(5) == range(5)
  assert distributed.gather_rows([{"a": 1}]) == [{"a": 1}]
  assert distributed.is_primary()
  distributed.sync("nothing")        # One process: returns at once.


def test_detect_explicit_values():
  d = distributed.detect
  assert d(environ={}) is None
  assert d(environ={"KVP_NUM_PROCESSES": "1"}) is None
  env = {"KVP_NUM_PROCESSES": "2", "KVP_PROCESS_ID": "1",
         "JAX_COORDINATOR_ADDRESS": "h:1"}
  assert d(environ=env) == distributed.Spec("explicit", "h:1", 2, 1)
  assert d(environ=env, mode="on") == distributed.Spec("explicit", "h:1", 2, 1)
  assert d(environ=env, mode="off") is None
  assert d(environ=dict(env, KVP_DISTRIBUTED="0")) is None
  # Flags win over the environment.
  assert d(process_id=0, coordinator_address="c:2", local_device_ids="0,1",
           environ=env) == distributed.Spec("explicit", "c:2", 2, 0, (0, 1))
  assert d(environ=dict(env, JAX_LOCAL_DEVICE_IDS="3")).local_device_ids == (3,)
  # A Kubernetes indexed Job: the index is the process id.
  k8s = {"KVP_NUM_PROCESSES": "4", "JOB_COMPLETION_INDEX": "3",
         "JAX_COORDINATOR_ADDRESS": "job-0.svc:1234"}
  assert d(environ=k8s).process_id == 3
  # One process said explicitly stays alone, even with --distributed=on.
  assert d(environ={"KVP_NUM_PROCESSES": "1"}, mode="on") is None


def test_launcher_variables_are_read():
  env = multiprocess.process_env(1, 3, "127.0.0.1:9", base={})
  assert distributed.detect(environ=env) == distributed.Spec(
      "explicit", "127.0.0.1:9", 3, 1)


# What jax.distributed.initialize() detects by itself: left to JAX.
_CLUSTERS = [
    {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
     "SLURM_PROCID": "0", "SLURM_LOCALID": "0"},
    {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4"},
    {"TPU_WORKER_HOSTNAMES": "a,b"},
]


@pytest.mark.parametrize("cluster", _CLUSTERS)
def test_managed_clusters_are_left_to_jax(cluster):
  d = distributed.detect
  assert d(environ=cluster) is None                  # auto: explicit only.
  assert d(environ=cluster, mode="off") is None
  spec = d(environ=dict(cluster, KVP_DISTRIBUTED="1"))
  assert spec == distributed.Spec("jax") and spec.kwargs() == {}


def test_on_passes_only_the_flags_given():
  env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_LOCAL_DEVICE_IDS": "0"}
  assert distributed.detect("on", environ=env).kwargs() == {}  # JAX reads them.
  spec = distributed.detect("on", coordinator_address="c:2",
                            local_device_ids=["0", "1"], environ=env)
  assert spec.kwargs() == {"coordinator_address": "c:2",
                           "local_device_ids": [0, 1]}


@pytest.fixture
def fake_jax_initialize(monkeypatch):
  """jax.distributed.initialize recorded instead of run; returns its calls."""
  calls = []
  for k in ("KVP_NUM_PROCESSES", "KVP_PROCESS_ID", "KVP_DISTRIBUTED",
            "JOB_COMPLETION_INDEX", "JAX_COORDINATOR_ADDRESS",
            "JAX_LOCAL_DEVICE_IDS"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
  monkeypatch.setattr(sys, "excepthook", sys.excepthook)   # Restored after.
  monkeypatch.setattr(distributed, "_backends_started", lambda: False)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda *a, **kw: calls.append((a, kw)))
  return calls


def test_initialize_on_calls_jax_without_arguments(fake_jax_initialize):
  hook = sys.excepthook
  assert distributed.initialize("on", timeout_s=7) == distributed.Spec("jax")
  assert fake_jax_initialize == [((), {"initialization_timeout": 7})]
  assert sys.excepthook is not hook          # Exits at once on an exception.


def test_initialize_off_and_alone_do_nothing(fake_jax_initialize, monkeypatch):
  for k, v in _CLUSTERS[0].items():
    monkeypatch.setenv(k, v)
  monkeypatch.setenv("KVP_NUM_PROCESSES", "2")
  monkeypatch.setenv("KVP_PROCESS_ID", "1")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
  assert distributed.initialize("off") is None
  monkeypatch.setenv("KVP_DISTRIBUTED", "0")
  assert distributed.initialize() is None
  monkeypatch.delenv("KVP_DISTRIBUTED")
  for k in ("KVP_NUM_PROCESSES", "KVP_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(k)
  assert distributed.initialize() is None    # auto with a SLURM env: alone.
  assert fake_jax_initialize == []


def test_initialize_passes_explicit_values(fake_jax_initialize, monkeypatch):
  monkeypatch.setenv("KVP_NUM_PROCESSES", "2")
  monkeypatch.setenv("KVP_PROCESS_ID", "1")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
  spec = distributed.initialize(local_device_ids="2,3", timeout_s=5)
  assert spec.source == "explicit"
  assert fake_jax_initialize == [((), {
      "initialization_timeout": 5, "coordinator_address": "h:1",
      "num_processes": 2, "process_id": 1, "local_device_ids": [2, 3]})]


@pytest.mark.parametrize("env,match", [
    ({"KVP_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1"},
     "without process_id"),
    ({"KVP_NUM_PROCESSES": "2", "KVP_PROCESS_ID": "0"},
     "without coordinator_address"),
    ({"KVP_PROCESS_ID": "0"}, "without num_processes"),
    ({"KVP_NUM_PROCESSES": "2", "KVP_PROCESS_ID": "2",
      "JAX_COORDINATOR_ADDRESS": "h:1"}, r"not in \[0, 2\)"),
    ({"KVP_NUM_PROCESSES": "two"}, "not an integer"),
    ({"KVP_DISTRIBUTED": "yes"}, "distributed mode"),
])
def test_detect_errors(env, match):
  with pytest.raises(ValueError, match=match):
    distributed.detect(environ=env)


def test_process_env():
  base = {"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8",
          "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
  env = multiprocess.process_env(1, 2, "127.0.0.1:9", devices_per_process=2,
                                 gpus_per_process=2, base=base)
  assert env["XLA_FLAGS"] == (
      "--xla_foo=1 --xla_force_host_platform_device_count=2")
  assert env["CUDA_VISIBLE_DEVICES"] == "6,7"
  assert (env["KVP_NUM_PROCESSES"], env["KVP_PROCESS_ID"],
          env["JAX_COORDINATOR_ADDRESS"]) == ("2", "1", "127.0.0.1:9")
  assert multiprocess.process_env(2, 3, "a:1", gpus_per_process=1, base={}
                                  )["CUDA_VISIBLE_DEVICES"] == "2"
  with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
    multiprocess.process_env(0, 2, "a:1", gpus_per_process=3, base=base)


def test_run_prefixes_and_status():
  out = io.StringIO()
  code = multiprocess.run(
      [sys.executable, "-c",
       "import os; print('hi', os.environ['KVP_PROCESS_ID'])"], 2, out=out)
  assert code == 0
  assert sorted(out.getvalue().splitlines()) == ["[0] hi 0", "[1] hi 1"]
  out = io.StringIO()
  code = multiprocess.run(
      [sys.executable, "-c", "import time; time.sleep(30)"], 2,
      timeout_s=1, grace_s=1, out=out)
  assert code == 124 and "timeout" in out.getvalue()
  with pytest.raises(ValueError, match="no command"):
    multiprocess.run([], 2)


def test_flags_alone_and_bad_mode():
  code = (
      "import sys\n"
      "from absl import flags\n"
      "from kvp_jax import distributed\n"
      "distributed.define_flags(); distributed.define_flags()\n"
      "flags.FLAGS(sys.argv)\n"
      "print('SPEC', distributed.initialize_from_flags())\n"
      "import jax; print('COUNT', jax.process_count())\n")
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  for k in ("KVP_NUM_PROCESSES", "KVP_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    env.pop(k, None)
  run = lambda *a: subprocess.run([sys.executable, "-c", code, *a], cwd=REPO,
                                  capture_output=True, text=True, timeout=120,
                                  env=env)
  proc = run("--num_processes=1")
  assert proc.returncode == 0, proc.stderr
  assert "SPEC None" in proc.stdout and "COUNT 1" in proc.stdout
  proc = run("--num_processes=2", "--process_id=0")
  assert proc.returncode != 0 and "without coordinator_address" in proc.stderr


def test_initialize_after_jax_was_used_is_an_error():
  code = ("import jax; jax.devices()\n"
          "from kvp_jax import distributed\n"
          "distributed.initialize(num_processes=2, process_id=0,\n"
          "                       coordinator_address='127.0.0.1:1')\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=str(REPO),
                                 JAX_PLATFORMS="cpu"))
  assert proc.returncode != 0
  assert "must run before anything uses JAX" in proc.stderr
