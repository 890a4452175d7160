"""Installing the project puts only the library into site-packages: no
generic top-level `experiments`, `launch` or `data_pipelines` package."""

import runpy
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def test_only_kvp_jax_is_installed(monkeypatch):
  captured = {}
  monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
  monkeypatch.chdir(REPO)
  runpy.run_path(str(REPO / "setup.py"))
  packages = captured["packages"]
  assert "kvp_jax" in packages and "kvp_jax.evaluation" in packages
  assert {p.split(".")[0] for p in packages} == {"kvp_jax"}
  assert captured["package_data"]["kvp_jax.policy"] == [
      "shipped/index.json", "shipped/*.kvp"]
