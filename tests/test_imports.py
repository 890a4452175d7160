"""The import structure: library code never imports the jobs that use it,
and no import cycle exists between kvp_jax's subpackages or its modules.

Every import statement counts, also those inside functions (a lazy import
is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("kvp_jax", "data_pipelines", "launch", "experiments",
           "benchmarks")
# What each top-level package may import of the project (besides itself).
ALLOWED = {
    "kvp_jax": set(),
    "data_pipelines": {"kvp_jax"},
    "launch": {"kvp_jax", "experiments"},
    "experiments": {"kvp_jax"},
    "benchmarks": {"kvp_jax", "experiments"},
}


def _module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, Path]:
  out = {}
  for top in PROJECT:
    for path in sorted((ROOT / top).rglob("*.py")):
      out[_module_name(path)] = path
  return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
  """Project modules that `name` imports (a `from package import x` names
  the submodule x when there is one, else the package)."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[:len(here) - node.level + 1]
        base = ".".join(here + ([base] if base else []))
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in MODULES else base)
  return {m for m in found if m.split(".")[0] in PROJECT and m in MODULES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_scan_sees_the_project():
  assert "kvp_jax.eviction._runtime" in MODULES
  assert "kvp_jax.cache" in GRAPH["kvp_jax.eviction._steps"]


@pytest.mark.parametrize("top", PROJECT)
def test_imports_flow_one_way(top):
  bad = sorted(f"{name} imports {dep}" for name, deps in GRAPH.items()
               if name.split(".")[0] == top for dep in deps
               if dep.split(".")[0] not in ALLOWED[top] | {top})
  assert not bad, "reverse imports:\n" + "\n".join(bad)


def _package_of(module: str) -> str:
  """kvp_jax.<subpackage> (or the top-level module) a module belongs to."""
  parts = module.split(".")
  return ".".join(parts[:2])


def test_no_cycle_between_kvp_jax_subpackages():
  graph: dict[str, set[str]] = {}
  for name, deps in GRAPH.items():
    if not name.startswith("kvp_jax."):
      continue
    src = _package_of(name)
    graph.setdefault(src, set()).update(
        _package_of(d) for d in deps
        if d.startswith("kvp_jax.") and _package_of(d) != src)
  assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_no_cycle_between_modules():
  cycle = _find_cycle(GRAPH)
  assert cycle is None, " -> ".join(cycle)


def test_a_cycle_is_found():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
      "a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) is None


# kvp_jax's library packages in pipeline order, as the package docstring
# lists them: each imports only the utilities and the packages before it.
UTILITIES = ("kvp_jax._files", "kvp_jax._locks", "kvp_jax.configs",
             "kvp_jax.distributed")
LAYERS = ("model", "cache", "samples", "inference", "policy", "scorers",
          "traces", "data", "objective", "training", "eviction", "evaluation")


def test_library_packages_import_only_earlier_ones():
  order = {f"kvp_jax.{name}": i for i, name in enumerate(LAYERS)}
  bad = []
  for name, deps in GRAPH.items():
    src = _package_of(name)
    if src not in order:
      continue
    for dep in deps:
      target = _package_of(dep)
      if target == src or target in UTILITIES:
        continue
      if order.get(target, len(LAYERS)) >= order[src]:
        bad.append(f"{name} imports {dep}")
  assert not bad, "imports against the pipeline order:\n" + "\n".join(bad)
