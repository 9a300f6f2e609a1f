import os
from pathlib import Path

import pytest
import torch

from nas import data as data_mod
from nas.references import all_references
from nas.space import SPACES_DIR

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILES = sorted(SPACES_DIR.glob("*.toml"))
REFERENCES = all_references()


def data_root() -> Path | None:
    """Real MNIST for integration tests; missing data skips them locally but fails them under CI."""
    root = os.environ.get(data_mod.ENV_VAR)
    if root and data_mod.raw_dir("mnist", Path(root)).is_dir():
        return Path(root).resolve()  # absolute: subprocesses run in other folders
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs real MNIST: set {data_mod.ENV_VAR} to a folder holding MNIST/raw")
    pytest.skip(f"real MNIST not found (set {data_mod.ENV_VAR})")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def mnist(mnist_root) -> data_mod.Splits:
    return data_mod.load("mnist", mnist_root)


def synthetic_splits(n_train=512, n_val=128, n_test=128, seed=0) -> data_mod.Splits:
    """A learnable toy task: the class is which of 10 horizontal bands is bright, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randn(n, 1, 28, 28, generator=g) * 0.3
        for i in range(n):
            band = int(y[i]) * 2 + 4
            x[i, 0, band:band + 2, :] += 2.0
        return x, y

    return data_mod.Splits(*make(n_train), *make(n_val), *make(n_test))


@pytest.fixture
def toy() -> data_mod.Splits:
    return synthetic_splits()


@pytest.fixture(autouse=True)
def _few_threads():
    # unit tests are tiny; one thread avoids oversubscribing CI's two cores when a subprocess also runs
    torch.set_num_threads(1)
