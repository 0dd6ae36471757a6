"""Shared fixtures: a tiny random model pair with its own tokenizer, built in seconds, offline."""

from __future__ import annotations

import pytest
import torch

from dera_demo.models import ModelPair, load_pair
from dera_demo.testing import TinyPair, build_tiny_pair

# One thread was 5-10x faster than two for tiny models on the 2-core test machines.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    return build_tiny_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def fp32_pair(tiny_pair: TinyPair) -> ModelPair:
    return load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="none", device="cpu")
