"""The results tables: cells over fewer samples than the full cache are
marked and never the best; a suite with two protocols names them."""

from kvp_jax.evaluation import _report


def _row(scorer, budget, value, n, protocol="once", metric="accuracy"):
  return dict(suite="s", group="mean", scorer=scorer, budget=budget,
              metric=metric, value=value, num_samples=n, protocol=protocol,
              allocation="uniform")


def test_cells_over_fewer_samples_are_marked_and_not_bold():
  rows = [_row("full", "full", 40.0, 10, protocol="full"),
          _row("kvp", "64", 90.0, 2), _row("knorm", "64", 30.0, 10)]
  md = _report.markdown(rows)
  assert "| kvp | 90.00† |" in md and "| knorm | **30.00** |" in md
  assert "†: over fewer samples than the full cache" in md
  same = [_row("full", "full", 40.0, 10, protocol="full"),
          _row("kvp", "64", 35.0, 10), _row("knorm", "64", 30.0, 10)]
  assert "†" not in _report.markdown(same)


def test_two_protocols_are_named_and_kvp_compared_within_each():
  rows = [_row("kvp", "64", 50.0, 4, "chunked"),
          _row("keydiff", "64", 40.0, 4, "chunked"),
          _row("kvp", "64", 20.0, 4, "once"),
          _row("keydiff", "64", 30.0, 4, "once"),
          _row("oracle", "64", 99.0, 4, "once")]
  md = _report.markdown(rows)
  assert "| kvp (chunked) | **50.00** |" in md
  assert "| oracle (once) | 99.00 |" in md        # An oracle is no best.
  assert "| s | 64 (chunked) | 50.000 | 40.000 (keydiff) | KVP's higher |" in md
  assert "| s | 64 (once) | 20.000 | 30.000 (keydiff) | KVP's lower |" in md
