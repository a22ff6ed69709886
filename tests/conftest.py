"""Shared fixtures: real MobileSAM weights, real photos, the upstream reference code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Two cores in CI: keep intra-op threads fixed so runs are comparable and the test processes don't fight.
torch.set_num_threads(int(os.environ.get("PEDVIT_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def mobile_sam():
    from pedvit.models import build_model

    return build_model("mobile_sam")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()
