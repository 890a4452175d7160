"""Writes small Gemma-3-style GGUF files for tests (random tiny models)."""

import gguf
import numpy as np


def write_gemma_gguf(path, config, params, arch="gemma3"):
  """Writes `params` (a kvp_jax decoder param tree) as a GGUF in llama.cpp's
  Gemma 3 naming and numpy (out, in) layout."""
  p = _np(params)
  c = config
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(c.num_layers)
  w.add_embedding_length(c.width)
  w.add_feed_forward_length(c.ffw_hidden)
  w.add_head_count(c.num_heads)
  w.add_head_count_kv(c.num_kv_heads)
  w.add_key_length(c.head_dim)
  w.add_value_length(c.head_dim)
  w.add_layer_norm_rms_eps(c.rms_eps)
  w.add_sliding_window(c.sliding_window)
  w.add_tokenizer_model("llama")
  if c.vocab_size < 4 + 256 + 26:
    raise ValueError("a sentencepiece byte-fallback vocabulary needs >= 286 "
                     "pieces")
  letters = ["\u2581"] + [chr(ord("a") + i % 26) * (1 + i // 26)
                          for i in range(c.vocab_size - 261)]
  tokens = (["<pad>", "<eos>", "<bos>", "<unk>"] +
            [f"<0x{i:02X}>" for i in range(256)] + letters)
  w.add_token_list(tokens)
  w.add_token_scores([0.0] * 260 + [-float(i) for i in range(len(letters))])
  w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * len(letters))
  d, n, k, h = c.width, c.num_heads, c.num_kv_heads, c.head_dim
  w.add_tensor("token_embd.weight", p["embedder"]["input_embedding"])
  w.add_tensor("output_norm.weight", p["final_norm"]["scale"])
  for i in range(c.num_layers):
    lp, b = p[f"layer_{i}"], f"blk.{i}."
    a = lp["attn"]
    w.add_tensor(b + "attn_norm.weight", lp["pre_attention_norm"]["scale"])
    w.add_tensor(b + "attn_q.weight",
                 a["q_proj"]["kernel"].transpose(1, 2, 0).reshape(n * h, d))
    w.add_tensor(b + "attn_k.weight",
                 a["k_proj"]["kernel"].transpose(1, 2, 0).reshape(k * h, d))
    w.add_tensor(b + "attn_v.weight",
                 a["v_proj"]["kernel"].transpose(1, 2, 0).reshape(k * h, d))
    w.add_tensor(b + "attn_output.weight",
                 a["o_proj"]["kernel"].transpose(2, 0, 1).reshape(d, n * h))
    w.add_tensor(b + "attn_q_norm.weight", a["query_norm"]["scale"])
    w.add_tensor(b + "attn_k_norm.weight", a["key_norm"]["scale"])
    w.add_tensor(b + "post_attention_norm.weight",
                 lp["post_attention_norm"]["scale"])
    w.add_tensor(b + "ffn_norm.weight", lp["pre_ffw_norm"]["scale"])
    w.add_tensor(b + "ffn_gate.weight", lp["mlp"]["gate"]["kernel"].T.copy())
    w.add_tensor(b + "ffn_up.weight", lp["mlp"]["up"]["kernel"].T.copy())
    w.add_tensor(b + "ffn_down.weight", lp["mlp"]["down"]["kernel"].T.copy())
    w.add_tensor(b + "post_ffw_norm.weight", lp["post_ffw_norm"]["scale"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _np(tree):
  if isinstance(tree, dict):
    return {k: _np(v) for k, v in tree.items()}
  return np.ascontiguousarray(np.asarray(tree, np.float32))
