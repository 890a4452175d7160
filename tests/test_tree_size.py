"""The tracked tree stays small enough to clone quickly and to send to a
remote accelerator host (which takes at most 64 MiB of working tree)."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 48


def test_tracked_files_total_under_the_limit():
  names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.split(b"\0")
  sizes = {n.decode(): (REPO / n.decode()).stat().st_size
           for n in names if n and (REPO / n.decode()).is_file()}
  total = sum(sizes.values()) / 2**20
  largest = sorted(sizes, key=sizes.get)[-5:]
  assert total < LIMIT_MIB, (f"{total:.1f} MiB tracked; largest: "
                             f"{[(n, sizes[n]) for n in largest]}")


def test_no_evaluation_module_over_300_lines():
  long = {p.name: n for p in (REPO / "kvp_jax" / "evaluation").glob("*.py")
          if (n := len(p.read_text().splitlines())) > 300}
  assert not long
