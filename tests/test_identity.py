"""nas.engine.identity: the identity a study records (settings, space fingerprint, data source, device ceilings), and
that a study resumes only with the one it was made with."""
import dataclasses

from nas.config import SearchConfig
from nas.engine.ceilings import Ceilings
from nas.engine.identity import ceiling_identity, space_fingerprint, study_identity
from nas.space.space_file import load_space


def test_the_identity_records_data_budget_and_space():
    space = load_space()
    identity = study_identity(SearchConfig(max_params=9000, train_subset=100), space)
    assert identity["max_params"] == 9000 and identity["train_subset"] == 100 and identity["space"] == "mnist"


def test_the_space_fingerprint_changes_with_every_declared_value_and_the_compute_ceiling():
    space = load_space()
    assert space_fingerprint(space) == space_fingerprint(load_space())
    changed = [dataclasses.replace(space, arch={**space.arch, "pool_placement": "late"}),
               dataclasses.replace(space, recipe={**space.recipe, "cycle_momentum": True}),
               dataclasses.replace(space, max_mflops=space.max_mflops / 2)]
    assert len({space_fingerprint(space), *map(space_fingerprint, changed)}) == 4


def test_the_identity_records_the_data_source_so_a_study_resumed_with_other_data_is_refused(tmp_path):
    import optuna
    import pytest

    from nas.engine import study as study_mod
    from nas.errors import StorageError

    space = load_space()
    identity = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "a"), image_size=16), space)
    assert identity["data_source"] == f"folder:{(tmp_path / 'a').resolve()}" and identity["image_size"] == 16
    assert study_identity(SearchConfig(), space)["data_source"] == "mnist"
    assert SearchConfig(dataset="npz", data_dir="/d/leaves.npz", image_size=32).study_name(space) == \
        "mnist-25000-npz-leaves-32px"
    storage = f"sqlite:///{tmp_path}/s.db"
    study_mod.create_or_resume(storage, "s", identity, optuna.samplers.RandomSampler())
    other = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "b"), image_size=16), space)
    with pytest.raises(StorageError, match="was made with data_source='folder:.*a', not 'folder:.*b'"):
        study_mod.create_or_resume(storage, "s", other, optuna.samplers.RandomSampler())
    resized = study_identity(SearchConfig(dataset="folder", data_dir=str(tmp_path / "a"), image_size=24), space)
    with pytest.raises(StorageError, match="image_size=16, not 24"):
        study_mod.create_or_resume(storage, "s", resized, optuna.samplers.RandomSampler())


def test_a_study_resumes_only_under_the_same_ceilings(tmp_path):
    import optuna
    import pytest

    from nas.engine import study as study_mod
    from nas.errors import StorageError

    space = load_space()
    storage = f"sqlite:///{tmp_path}/s.db"
    identity = study_identity(SearchConfig(max_peak_kb=64), space)
    assert (identity["max_mflops"], identity["max_peak_kb"], identity["int8_memory"], identity["max_latency_ms"]) == (
        8.0, 64, False, None)  # the effective ceilings: the space's max_mflops unless --max-mflops says otherwise
    study_mod.create_or_resume(storage, "s", identity, optuna.samplers.RandomSampler())
    with pytest.raises(StorageError, match="max_peak_kb=64, not None"):
        study_mod.create_or_resume(storage, "s", study_identity(SearchConfig(), space), optuna.samplers.RandomSampler())


def test_each_device_ceiling_has_its_own_label_and_the_param_budget_none():
    labels = ceiling_identity(Ceilings(25_000, mflops=4.0, peak_kb=64, int8=True, latency_ms=0.5, arena_kb=48,
                                       flash_kb=96))
    assert labels == {"max_mflops": 4.0, "max_peak_kb": 64, "int8_memory": True, "max_latency_ms": 0.5,
                      "max_arena_kb": 48, "max_flash_kb": 96}


def test_only_the_pareto_mode_labels_its_objective_and_size_metric():
    space = load_space()
    assert not {"objective", "size_metric"} & set(study_identity(SearchConfig(), space))  # as they were before it
    pareto = study_identity(SearchConfig(objective="pareto"), space)
    assert (pareto["objective"], pareto["size_metric"]) == ("pareto", "params")
    assert study_identity(SearchConfig(objective="pareto", size_metric="mflops"), space)["size_metric"] == "mflops"
