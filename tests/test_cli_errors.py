"""Every command line turns bad input into one line on stderr and exit 2.

The commands run in subprocesses on tiny inputs; each case fails before any
real model loads.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from absl import flags
from ml_collections import config_flags
import pytest

from kvp_jax import _config_args
from kvp_jax import _locks

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
TINY = str(ROOT / "experiments" / "tiny.py")


def _run(*args, timeout=120):
  """(exit status, stderr) of `python -m <args>`."""
  proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT,
                        env=ENV, capture_output=True, text=True,
                        timeout=timeout, check=False)
  return proc.returncode, proc.stderr


def _one_error(rc, stderr, *fragments):
  """Asserts exit 2 and exactly one `error:` line naming every fragment."""
  assert "Traceback" not in stderr, stderr
  assert rc == 2, stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
  """Missing, empty, non-GGUF and (if the shipped model is installed)
  truncated GGUF files."""
  d = tmp_path_factory.mktemp("gguf")
  (d / "empty.gguf").write_bytes(b"")
  (d / "text.gguf").write_text("this is not a GGUF file\n" * 100)
  files = {"missing": d / "missing.gguf", "empty": d / "empty.gguf",
           "not_gguf": d / "text.gguf"}
  try:
    from kvp_jax.model import _gguf  # pylint: disable=g-import-not-at-top
    shipped = _gguf.default_gguf_path()
    with open(shipped, "rb") as f:
      (d / "truncated.gguf").write_bytes(f.read(4 << 20))
    files["truncated"] = d / "truncated.gguf"
  except Exception:  # pylint: disable=broad-except
    pass
  return files


TEXT = "/usr/share/common-licenses/GPL-3"


@pytest.mark.parametrize("command,kind,fragment", [
    (["kvp_jax.generate", "--prompt=hi"], "missing", "GGUF file not found"),
    (["kvp_jax.perplexity", f"--text_file={TEXT}"], "missing",
     "GGUF file not found"),
    (["data_pipelines.make_samples", "--tasks=vt", "--output_dir=OUT"],
     "missing", "GGUF file not found"),
    (["kvp_jax.perplexity", f"--text_file={TEXT}"], "empty",
     "the GGUF file is empty"),
    (["kvp_jax.generate", "--prompt=hi"], "not_gguf",
     "is not a readable GGUF file"),
    (["data_pipelines.make_samples", "--tasks=vt", "--output_dir=OUT"],
     "truncated", "truncated"),
])
def test_bad_gguf(command, kind, fragment, gguf_files, tmp_path):
  if kind not in gguf_files:
    pytest.skip("the shipped model is not installed")
  path = gguf_files[kind]
  command = [c.replace("OUT", str(tmp_path / "out")) for c in command]
  _one_error(*_run(*command, f"--gguf={path}"), str(path), fragment)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command,fragment", [
    (["kvp_jax.perplexity", f"--text_file={TEXT}", "--max_tokens=-5"],
     "--max_tokens=-5"),
    (["kvp_jax.perplexity", f"--text_file={TEXT}", "--max_tokens=10",
      "--skip=9"], "--skip=9 leaves nothing to score"),
    (["kvp_jax.generate", "--prompt=hi", "--max_new_tokens=0"],
     "--max_new_tokens=0"),
    (["kvp_jax.generate", "--prompt=hi", "--budget=0", "--scorer=knorm"],
     "--budget=0"),
    (["kvp_jax.perplexity", f"--text_file={TEXT}", "--budget=8",
      "--scorer=nosuch"], "--scorer=nosuch: unknown scorer"),
    (["kvp_jax.generate", "--prompt=hi", "--budget=8",
      "--policy=/nonexistent/policy.kvp"],
     "policy artifact not found: /nonexistent/policy.kvp"),
    (["data_pipelines.make_samples", "--tasks=vt", "--num_samples=-1",
      "--output_dir=OUT"], "--num_samples=-1"),
    (["data_pipelines.make_samples", "--tasks=vt", "--lengths=0",
      "--output_dir=OUT"], "bad length '0'"),
    (["data_pipelines.routing_accuracy", "--route_by=nearest",
      "--output=OUT"], "--route_by: unknown ['nearest']"),
    (["data_pipelines.needle_depth", "--num_samples=0", "--output_dir=OUT"],
     "--num_samples and --batch_size must be positive"),
    (["data_pipelines.trace_diagnostics", f"--config={TINY}",
      "--workdir=OUT", "--num_samples=1"], "--num_samples must be >= 2"),
    (["data_pipelines.trace_diagnostics", f"--config={TINY}",
      "--workdir=OUT", "--budgets=64,x"], "--budgets: not integers"),
    (["data_pipelines.trace_diagnostics", f"--config={TINY}",
      "--workdir=OUT"], "is not a trace store"),
    # The frozen test suite chooses nothing: no training on it, no pipeline.
    (["kvp_jax.pipeline", f"--config={ROOT}/experiments/test.py",
      "--workdir=OUT"], "evaluates an already-chosen policy"),
    (["data_pipelines.generate_traces", f"--config={TINY}", "--workdir=OUT",
      f"--config.traces.sources=[{{'kind': 'jsonl', 'paths': ['{ROOT}/"
      "experiments/test_suites/ruler_ood_2048.jsonl']}]"],
     "is a frozen test file"),
])
def test_bad_counts_and_names(command, fragment, tmp_path):
  command = [c.replace("OUT", str(tmp_path / "out")) for c in command]
  _one_error(*_run(*command), fragment)
  assert not (tmp_path / "out").exists()  # Nothing written.


@pytest.mark.parametrize("module", ["kvp_jax.train", "kvp_jax.pipeline",
                                    "kvp_jax.evaluate",
                                    "data_pipelines.generate_traces"])
def test_unknown_config_field(module, tmp_path):
  _one_error(*_run(module, f"--config={TINY}", f"--workdir={tmp_path / 'w'}",
                   "--config.train.nosuch=1"),
             "--config.train.nosuch", "config.train has no field 'nosuch'")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("module", ["kvp_jax.train", "kvp_jax.pipeline"])
def test_missing_config_file(module, tmp_path):
  _one_error(*_run(module, "--config=/nonexistent.py",
                   f"--workdir={tmp_path / 'w'}"),
             "config file /nonexistent.py does not exist")
  assert not (tmp_path / "w").exists()


def test_bad_config_value_and_scorer(tmp_path):
  _one_error(*_run("kvp_jax.train", f"--config={TINY}",
                   f"--workdir={tmp_path / 'w'}", "--config.train.steps=abc"),
             "--config.train.steps=abc")
  _one_error(*_run("kvp_jax.pipeline", f"--config={TINY}",
                   f"--workdir={tmp_path / 'w'}",
                   "--config.eval.scorers=[knorm,nosuch]"),
             "config.eval.scorers: unknown scorer 'nosuch'")
  assert not (tmp_path / "w").exists()


def test_list_fields_from_the_command_line():
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=False)
  _config_args.parse(["p", f"--config={TINY}", "--config.eval.budgets=[8,16]",
                      "--config.eval.scorers=[knorm, 'keydiff']",
                      "--config.train.steps=3"], fv)
  assert fv.config.eval.budgets == [8, 16]
  assert fv.config.eval.scorers == ["knorm", "keydiff"]
  assert fv.config.train.steps == 3
  for arg, message in [("--config.eval.budgets=[8,x]", "not a list of int"),
                       ("--config.train.steps=[3]", "is a int, not a list"),
                       ("--config.eval.nosuch=[1]", "has no field 'nosuch'")]:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                    lock_config=False)
    with pytest.raises(flags.Error, match=message):
      _config_args.parse(["p", f"--config={TINY}", arg], fv)


def _jsonl_config(tmp_path, samples_path):
  path = tmp_path / "cfg.py"
  path.write_text(textwrap.dedent(f"""
      from experiments import tiny
      def get_config():
        c = tiny.get_config()
        c.traces.sources = [{{"kind": "jsonl", "paths": [{str(samples_path)!r}]}}]
        return c
  """))
  return path


@pytest.mark.parametrize("module", ["data_pipelines.generate_traces",
                                    "kvp_jax.pipeline"])
def test_trace_job_missing_sample_file(module, tmp_path):
  missing = tmp_path / "no" / "samples.jsonl"
  _one_error(*_run(module, f"--config={_jsonl_config(tmp_path, missing)}",
                   f"--workdir={tmp_path / 'w'}"),
             f"sample file {missing} does not exist")
  assert not (tmp_path / "w" / "traces").exists()


def test_trace_job_unwritable_workdir(tmp_path):
  workdir = Path("/sys/kvp_jax_test_workdir")  # Unwritable even for root.
  line = _one_error(*_run("data_pipelines.generate_traces", f"--config={TINY}",
                          f"--workdir={workdir}"), str(workdir))
  assert "denied" in line or "not permitted" in line or "Read-only" in line


def test_second_trace_job_and_evaluation_stop_at_once(tmp_path):
  holder = textwrap.dedent("""
      import sys, time
      from kvp_jax import _locks
      locks = [_locks.acquire(p) for p in sys.argv[1:]]
      print("held", flush=True)
      time.sleep(600)
  """)
  store, out = tmp_path / "w" / "traces", tmp_path / "w" / "eval"
  proc = subprocess.Popen([sys.executable, "-c", holder, str(store), str(out)],
                          cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
  try:
    assert "held" in proc.stdout.readline()
    _one_error(*_run("data_pipelines.generate_traces", f"--config={TINY}",
                     f"--workdir={tmp_path / 'w'}"),
               f"trace store {store} is being written by another process",
               f"pid {proc.pid}")
    _one_error(*_run("kvp_jax.evaluate", f"--config={TINY}",
                     f"--workdir={tmp_path / 'w'}",
                     "--config.eval.scorers=[knorm]"),
               f"evaluation output {out} is being written", f"pid {proc.pid}")
  finally:
    proc.kill()
    proc.wait()
  assert not store.exists()


def test_sweep_checks_points_before_launching(tmp_path):
  root = tmp_path / "sweep"
  _one_error(*_run("launch.sweep", f"--config={TINY}", f"--root={root}",
                   "--grid=train.steps=3,4", "--grid=policy.nosuch=1"),
             "point steps=3,nosuch=1", "unknown config field 'policy.nosuch'")
  _one_error(*_run("launch.sweep", f"--config={TINY}", f"--root={root}",
                   "--grid=train.steps=3,many"),
             "point steps=many", "--config.train.steps=many")
  assert not root.exists()  # Nothing launched.


def test_sweep_keeps_results_when_nothing_was_gathered(tmp_path):
  root = tmp_path / "sweep"
  (root / "steps=3").mkdir(parents=True)
  (root / "steps=3" / "DONE").write_text("done\n")  # Nothing to launch.
  (root / "sweep_results.md").write_text("# the old table\n")
  proc = subprocess.run([sys.executable, "-m", "launch.sweep",
                         f"--config={TINY}", f"--root={root}",
                         "--grid=train.steps=3"], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  assert "left as it was" in proc.stderr
  assert (root / "sweep_results.md").read_text() == "# the old table\n"


_RAISES = textwrap.dedent("""
    import errno, sys
    from kvp_jax import _cli
    def main(argv):
      raise OSError(errno.ENOSPC, "No space left on device",
                    "/data/store/progress.json")
    _cli.run(main)
""")


def test_os_errors_are_one_line_and_debug_shows_the_traceback():
  proc = subprocess.run([sys.executable, "-c", _RAISES], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=60,
                        check=False)
  _one_error(proc.returncode, proc.stderr,
             "/data/store/progress.json: No space left on device")
  proc = subprocess.run([sys.executable, "-c", _RAISES, "--debug"], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=60,
                        check=False)
  assert proc.returncode == 1 and "Traceback" in proc.stderr
  assert "errno" in proc.stderr.lower() or "No space" in proc.stderr


def test_lock_error_names_holder_role(tmp_path):
  with _locks.acquire(tmp_path / "d", _locks.Role(0, 2)) as lock:
    assert '"role": "writer 0 of 2"' in lock.path.read_text()
    assert f'"pid": {os.getpid()}' in lock.path.read_text()


def test_a_second_training_job_on_a_run_directory_stops(tmp_path):
  from kvp_jax import _locks  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  with _locks.acquire(workdir, what="training run"):
    line = _one_error(*_run("kvp_jax.train", f"--config={TINY}",
                            f"--workdir={workdir}",
                            f"--config.traces.store={tmp_path / 'none'}"),
                      "training run")
  assert str(os.getpid()) in line and not workdir.exists()


def test_a_prompt_beyond_the_context_is_one_line_before_any_compile(tmp_path):
  """generate and perplexity (with and without a budget) refuse more tokens
  than Gemma 3 270M's context (32768) with one line naming the limit; with
  JAX_LOG_COMPILES on, nothing was compiled first. Loads the shipped model
  (no forward pass)."""
  try:
    from kvp_jax.model import _gguf  # pylint: disable=g-import-not-at-top
    _gguf.default_gguf_path()
  except Exception:  # pylint: disable=broad-except
    pytest.skip("the shipped model is not installed")
  text = " ".join(f"word{i}" for i in range(20_000))       # > 32768 tokens.
  (tmp_path / "prompts.txt").write_text(text + "\n")
  (tmp_path / "long.txt").write_text(text)
  limit = "exceeds the model's context of 32768 tokens (gemma3_270m)"
  env = dict(ENV, JAX_LOG_COMPILES="1")
  cases = [
      (["kvp_jax.generate", f"--prompts_file={tmp_path / 'prompts.txt'}",
        "--max_new_tokens=8"], "(+ 8 to generate) " + limit),
      (["kvp_jax.perplexity", f"--text_file={tmp_path / 'long.txt'}",
        "--max_tokens=40000"], "prompt of 40000 tokens " + limit),
      (["kvp_jax.perplexity", f"--text_file={tmp_path / 'long.txt'}",
        "--max_tokens=40000", "--skip=512", "--budget=128",
        "--scorer=knorm"],
       "prompt of 513 tokens (+ 39487 to score) " + limit),
  ]
  for args, fragment in cases:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
    _one_error(proc.returncode, proc.stderr, fragment)
    # Logged for every jitted program, compiled or read from the cache.
    assert "Finished tracing" not in proc.stderr, proc.stderr
    assert "Compiling" not in proc.stderr, proc.stderr
