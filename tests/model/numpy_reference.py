"""An independent float64 numpy forward of the Gemma 3 decoder, written from
the architecture description (not from kvp_jax.model's code), for tests."""

import numpy as np


def _rms(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, base):
  """x [T, heads, H]; rotate pairs (i, i + H/2) by pos / base**(2i/H)."""
  h = x.shape[-1]
  out = np.empty_like(x)
  for i in range(h // 2):
    theta = pos / base ** (2 * i / h)                          # [T]
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    a, b = x[..., i], x[..., i + h // 2]
    out[..., i] = a * c - b * s
    out[..., i + h // 2] = b * c + a * s
  return out


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(config, params, tokens):
  """Logits [T, vocab] of one unpadded sequence, float64."""
  p = _to_numpy(params)
  c = config
  t = len(tokens)
  pos = np.arange(t, dtype=np.float64)
  emb = p["embedder"]["input_embedding"]
  x = emb[np.asarray(tokens)] * np.sqrt(c.width)
  g = c.num_heads // c.num_kv_heads
  for layer in range(c.num_layers):
    lp = p[f"layer_{layer}"]
    a = lp["attn"]
    local = c.attention_pattern[layer % len(c.attention_pattern)] == "local"
    base = c.local_rope_base if local else c.global_rope_base
    h = _rms(x, lp["pre_attention_norm"]["scale"], c.rms_eps)
    q = np.einsum("td,dnh->tnh", h, a["q_proj"]["kernel"])
    k = np.einsum("td,dkh->tkh", h, a["k_proj"]["kernel"])
    v = np.einsum("td,dkh->tkh", h, a["v_proj"]["kernel"])
    q = _rms(q, a["query_norm"]["scale"], c.rms_eps)
    k = _rms(k, a["key_norm"]["scale"], c.rms_eps)
    q = _rope(q, pos, base) * c.query_scale
    k = _rope(k, pos, base)
    att = np.zeros_like(q)
    for n in range(c.num_heads):
      kv = n // g
      for i in range(t):
        js = [j for j in range(i + 1)
              if not local or i - j < c.sliding_window]
        s = np.array([q[i, n] @ k[j, kv] for j in js])
        w = np.exp(s - s.max())
        w /= w.sum()
        att[i, n] = sum(wj * v[j, kv] for wj, j in zip(w, js))
    o = np.einsum("tnh,nhd->td", att, a["o_proj"]["kernel"])
    x = x + _rms(o, lp["post_attention_norm"]["scale"], c.rms_eps)
    h = _rms(x, lp["pre_ffw_norm"]["scale"], c.rms_eps)
    m = lp["mlp"]
    f = _gelu_tanh(h @ m["gate"]["kernel"]) * (h @ m["up"]["kernel"])
    x = x + _rms(f @ m["down"]["kernel"], lp["post_ffw_norm"]["scale"],
                 c.rms_eps)
  x = _rms(x, p["final_norm"]["scale"], c.rms_eps)
  return x @ emb.T


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)
