"""Weights files: safetensors (no pickle, safe to load) carrying the candidate spec and the data in their metadata.

The tensors are the network's state_dict, under its own keys. The metadata holds the candidate's JSON (`nas.candidate`)
and, since networks train on any data, what they were trained on (`nas.data`: source, input shape, class names and
per-channel normalisation, as nas.data.DataInfo.to_dict() gives it). The `.json` beside the file holds the same: the
candidate's keys, plus `data`.

A file without `nas.data` (saved with no data given) loads as its bare network, which takes normalised images.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import optuna
import safetensors
import torch
from safetensors.torch import load_file, save_file

from nas.space.build import Network, build
from nas.data import DataInfo
from nas.errors import UserError, first_line
from nas.fileio import atomic_path, write_text
from nas.space.spec import Candidate, SpecError

SPEC_KEY = "nas.candidate"
DATA_KEY = "nas.data"


class WeightsError(UserError, ValueError):
    """A weights file that cannot be loaded into its network."""


class WeightsUnreachable(WeightsError):
    """A trial's stored weights cannot be read from this machine (kept on another host's disk, or a store that does
    not answer)."""


# how weights become reachable from every machine, for the messages that say they are not
SHARED_STORE_HINT = "keep weights where every machine reaches them: --artifact-store db or s3://BUCKET/PREFIX"


class Normalised(Network):
    """A trained network that takes images scaled to [0, 1], (N, C, H, W): it normalises each channel as its training
    data was, then runs its layers. Its layers and state_dict keys are the network's (mean and std are not in the
    state_dict: they travel in the file's metadata); `info` names the classes, label i being info.classes[i]."""

    def __init__(self, network: Network, info: DataInfo):
        super().__init__(*network)
        self.info = info
        shape = (1, len(info.mean), 1, 1)
        device = next((p.device for p in network.parameters()), None)
        self.register_buffer("mean", torch.tensor(info.mean, device=device).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(info.std, device=device).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.mean) / self.std)


def save(model: torch.nn.Module, candidate: Candidate, path: str | Path, data: DataInfo | None = None) -> None:
    """Writes `path` (.safetensors) and, beside it, the spec as `.json`; `data`, what the network was trained on,
    goes into both."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _write_weights(tensors, candidate, data, path)
    write_text(path.with_suffix(".json"), spec_json(candidate, data))


def _write_weights(tensors: dict, candidate: Candidate, data: DataInfo | None, path: Path) -> None:
    metadata = {SPEC_KEY: candidate.to_json()}
    if data is not None:
        metadata[DATA_KEY] = json.dumps(data.to_dict(), sort_keys=True)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except safetensors.SafetensorError as e:
            raise _os_error(e) from None


def spec_json(candidate: Candidate, data: DataInfo | None) -> str:
    """The `.json` beside a weights file: the candidate's keys, and `data` when it is known."""
    d = candidate.to_dict()
    if data is not None:
        d["data"] = data.to_dict()
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def read_spec(path: str | Path) -> tuple[Candidate, DataInfo | None]:
    """The candidate and the data of a weights file, from its metadata, else from the `.json` beside it. The data is
    None for a file saved without it."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged header
        raise WeightsError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    if SPEC_KEY in meta:
        candidate = Candidate.from_json(meta[SPEC_KEY], f"{path} metadata")
        data = _data_from(_json(meta[DATA_KEY], f"{path} metadata {DATA_KEY}"), f"{path} metadata {DATA_KEY}") \
            if DATA_KEY in meta else None
        return candidate, _checked(data, candidate, f"{path} metadata")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise WeightsError(f"{path}: carries no spec and there is no {sidecar.name} beside it")
    return read_spec_json(sidecar.read_text(), str(sidecar))


def recorded_in(meta: dict[str, str], where: str, error: type[Exception]) -> tuple[Candidate, DataInfo]:
    """The candidate and the data that an exported model's metadata records (SPEC_KEY, DATA_KEY); an `error` with
    one line if they are missing or damaged."""
    if SPEC_KEY not in meta or DATA_KEY not in meta:
        raise error(f"{where}: not written by search.py export (no {SPEC_KEY} and {DATA_KEY} metadata)")
    try:
        return Candidate.from_json(meta[SPEC_KEY], f"{where} metadata {SPEC_KEY}"), \
            DataInfo.from_dict(json.loads(meta[DATA_KEY]))
    except (SpecError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise error(f"{where}: its metadata is damaged ({first_line(e)})") from None


def read_spec_json(text: str, where: str) -> tuple[Candidate, DataInfo | None]:
    """A spec JSON file (a `.json` beside the weights, or written by hand): the candidate, and its `data` if any."""
    d = _json(text, where)
    data = _data_from(d.pop("data"), f"{where}: data") if isinstance(d, dict) and "data" in d else None
    candidate = Candidate.from_dict(d, where)
    return candidate, _checked(data, candidate, where)


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise SpecError(f"{where}: JSON nested too deeply to be a spec") from None


def _data_from(d, where: str) -> DataInfo:
    try:
        return DataInfo.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SpecError(f"{where}: not a description of the data ({type(e).__name__}: {e})") from None


def _checked(data: DataInfo | None, candidate: Candidate, where: str) -> DataInfo | None:
    """`data`, if it agrees with the network: the same input shape, a name per class, a mean and a std per channel."""
    if data is None:
        return None
    arch = candidate.arch
    if (tuple(data.shape) != tuple(arch.input_shape) or len(data.classes) != arch.num_classes
            or not len(data.mean) == len(data.std) == arch.input_shape[0] or not all(s > 0 for s in data.std)):
        raise SpecError(f"{where}: the data ({data.shape}, {len(data.classes)} classes, {len(data.mean)} means, "
                        f"{len(data.std)} stds) does not match the network's input {tuple(arch.input_shape)} and "
                        f"{arch.num_classes} classes")
    return data


def load(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The network of a weights file, in eval mode, identical to the one that was saved.

    It takes images scaled to [0, 1], (N, C, H, W), and normalises them as in training (a `Normalised`, whose `info`
    names the classes). A file written before the data was recorded gives its bare network, which takes images
    normalised as in training, as it always did (see the module's docstring).
    """
    path = Path(path)
    candidate, data = read_spec(path)
    try:
        model = build(candidate.arch, device=device)
    except SpecError as e:
        raise WeightsError(f"{path}: its spec does not build ({e})") from None
    try:
        state = load_file(str(path), device=device)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - truncated data or shape mismatches
        raise WeightsError(f"{path}: weights do not fit the spec ({first_line(e)})") from None
    return (model if data is None else Normalised(model, data)).eval()


class FolderStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's folder store, with `location`, the folder's absolute path: what its trials record as weights_store."""

    def __init__(self, directory: str | Path):
        super().__init__(str(directory))
        self.location = str(Path(directory).absolute())


def artifact_store(directory: str | Path) -> FolderStore:
    """The folder store of `directory`, created if missing (nas.engine.artifact_store opens the other kinds)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return FolderStore(directory)


def upload_weights(trial: optuna.Trial, model: torch.nn.Module, candidate: Candidate, store, scratch: Path,
                   data: DataInfo | None = None) -> str:
    """Stores the trial's weights, with the data they were trained on, as an Optuna artifact, so the dashboard lists
    them and export can fetch them."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"trial-{trial.number}-{candidate.id}.safetensors"
    try:
        save(model, candidate, path, data)
    except OSError as e:  # named by the folder, not this trial's file: a full disk fails every trial the same way
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(scratch)) from None
    try:
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                                mimetype="application/octet-stream")
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)


def export_trial(trial: optuna.trial.FrozenTrial, store, out: str | Path) -> Path:
    """Copies a trial's weights artifact to `out` (plus the `.json` spec beside it)."""
    artifact_id = trial.user_attrs.get("weights_artifact")
    if not artifact_id:
        raise WeightsError(f"trial {trial.number} has no stored weights (state {trial.state.name})")
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.unlink()
        try:
            optuna.artifacts.download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(tmp))
        except OSError:
            raise  # writing `out` failed (a full disk), or the artifact is unreadable: the error names the file
        except Exception as e:  # noqa: BLE001
            raise WeightsUnreachable(f"{unreachable_weights(trial)} ({first_line(e)}); export it on the machine "
                                     f"that holds them, or pass --artifact-store where they are") from None
    candidate = Candidate.from_json(trial.user_attrs["spec"])
    try:
        recorded = read_spec(out)[1]
    except SpecError as e:
        raise WeightsError(str(e)) from None
    write_text(out.with_suffix(".json"), spec_json(candidate, recorded))
    return out


def unreachable_weights(trial: optuna.trial.FrozenTrial) -> str:
    """Which trial's weights this machine cannot read, and where they are: "trial 3's weights (artifact ID, on host
    H in STORE) are not reachable from this machine"."""
    attrs = trial.user_attrs
    where = f"on host {attrs['weights_host']} in {attrs.get('weights_store')}" if "weights_host" in attrs else \
        "stored before trials recorded where"
    return f"trial {trial.number}'s weights (artifact {attrs.get('weights_artifact')}, {where}) are not reachable " \
           f"from this machine"


def _os_error(e: Exception) -> Exception:
    """safetensors reports a failed write (a full disk) as "... (os error 28)": the OSError it was, else `e`."""
    found = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else e

