import fcntl
import functools
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
import sqlalchemy.pool
import torch

from nas import data as data_mod, logs
from nas.data import sources
from nas.engine.storage import sqlalchemy_url
from nas.space.references import all_references
from nas.space.space_file import DEFAULT_SPACE, SPACES_DIR

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILES = sorted(SPACES_DIR.glob("*.toml"))
REFERENCES = all_references()


def data_root() -> Path:
    """Real MNIST for integration tests: $NAS_DATA_DIR, else ./data, downloaded there by torchvision if missing.

    Without either, the integration tests skip with one line locally and fail under CI.
    """
    root = Path(os.environ.get(data_mod.ENV_VAR) or ROOT / data_mod.DEFAULT_ROOT).resolve()  # absolute for subprocesses
    if not _has_mnist(root):
        sources.download_files("mnist", root)
    if _has_mnist(root):
        return root
    reason = f"real MNIST is not in {root} and could not be downloaded; set {data_mod.ENV_VAR} to a folder holding MNIST/raw"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def service_address(env_var: str, what: str) -> str:
    """A test service's address, from `env_var`: .ci/run starts each service and sets it. Without it, tests skip with
    one line locally and fail under CI."""
    address = os.environ.get(env_var)
    if address:
        return address
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {what}: set {env_var} (.ci/run starts one)")
    pytest.skip(f"needs {what}; set {env_var}")


@pytest.fixture(scope="module")
def postgres_url() -> str:
    return service_address("NAS_TEST_POSTGRES_URL", "a PostgreSQL server, postgresql://USER:PASS@HOST:PORT/DB")


def _has_mnist(root: Path) -> bool:
    return sources.missing_files("mnist", root) == []


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


@pytest.fixture(autouse=True)
def _lines_printed():
    # each test starts with the printed lines as a fresh process has them, whatever an in-process search left
    logs.forward_to(None)
    logs.configure(quiet=False)


POSTGRES_TURNS = Path(tempfile.gettempdir()) / "tinynas-tests-postgres.lock"


@pytest.fixture(autouse=True)
def _postgres_turns(request):
    """Tests on the shared PostgreSQL server run side by side (xdist), except one that stops the server
    (marked stops_postgres): it waits for the others, and they wait for it."""
    marks = {mark.name for mark in request.node.iter_markers()}
    if not marks & {"postgres", "stops_postgres"}:
        yield
        return
    with open(POSTGRES_TURNS, "a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX if "stops_postgres" in marks else fcntl.LOCK_SH)
        yield


# -- shared by several test files ---------------------------------------------------------------------------------
class Untouchable:
    """Stands in for a tensor that must not be used: reading anything of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test set was read (.{name})")

    def __len__(self):
        raise AssertionError("the test set was read (len)")

    def __getitem__(self, index):
        raise AssertionError("the test set was read (an index)")


QUADRANT_SHAPE, QUADRANT_CLASSES = (1, 16, 16), 4


def quadrant_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 16x16 noise, one quadrant brighter: the class is which one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, QUADRANT_CLASSES, n)
    x = rng.integers(0, 90, (n, 16, 16)).astype(np.uint8)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * 8:r * 8 + 8, c * 8:c * 8 + 8] += 120
    return x, y


def quadrants_npz(path: Path, train: int, test: int) -> Path:
    """quadrant_images as an npz file (`train` training and `test` test images), for --dataset npz."""
    (x_train, y_train), (x_test, y_test) = quadrant_images(train, 0), quadrant_images(test, 1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def foreign_model():
    """A valid ONNX model that search.py did not write: an identity, no metadata."""
    import onnx

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    return onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))


def refused(text='connection to server at "127.0.0.1", port 5432 failed: Connection refused'):
    """The error SQLAlchemy raises when the database server refuses the connection."""
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))


def torchvision_info(dataset: str) -> data_mod.DataInfo:
    """What a search on MNIST or Fashion-MNIST records of its data, as its weights carry it."""
    mean, std = sources.DATASETS[dataset].mean_std
    return data_mod.DataInfo(dataset, (1, 28, 28), tuple(sources.DATASETS[dataset].classes), mean, std)


def write_space(tmp_path: Path, edit=lambda text: text) -> Path:
    """The default space file with `edit` applied to its text, written as tmp_path / "space.toml"."""
    path = tmp_path / "space.toml"
    path.write_text(edit(DEFAULT_SPACE.read_text()))
    return path


def throwaway_study(url: str, prefix: str):
    """For a fixture to `yield from`: a new study name on the database `url`, whose study is deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=sqlalchemy_url(url))
    except KeyError:  # the test made no study
        pass


@functools.cache
def database(url: str) -> optuna.storages.RDBStorage:
    """One Optuna storage per database URL in a test process, opening a connection per call: tests poll studies
    many times a second, and a pool per read would exhaust the test server's 100 connections."""
    return optuna.storages.RDBStorage(sqlalchemy_url(url), engine_kwargs={"poolclass": sqlalchemy.pool.NullPool})
