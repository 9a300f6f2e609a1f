"""Weights files: safetensors (no pickle, safe to load) carrying the candidate spec in their metadata."""
from __future__ import annotations

import os
import re
from pathlib import Path

import optuna
import safetensors
import torch
from safetensors.torch import load_file, save_file

from nas.build import build
from nas.errors import UserError
from nas.fileio import atomic_path, write_text
from nas.spec import Candidate, SpecError

SPEC_KEY = "nas.candidate"


class WeightsError(UserError, ValueError):
    """A weights file that cannot be loaded into its network."""


def save(model: torch.nn.Module, candidate: Candidate, path: str | Path) -> None:
    """Writes `path` (.safetensors) and, beside it, the spec as `.json`."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={SPEC_KEY: candidate.to_json()})
        except safetensors.SafetensorError as e:
            raise _os_error(e) from None
    write_text(path.with_suffix(".json"), candidate.to_json(indent=2) + "\n")


def read_candidate(path: str | Path) -> Candidate:
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged header
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    if SPEC_KEY in meta:
        return Candidate.from_json(meta[SPEC_KEY], f"{path} metadata")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise WeightsError(f"{path}: carries no spec and there is no {sidecar.name} beside it")
    return Candidate.from_json(sidecar.read_text(), str(sidecar))


def load(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The network of a weights file, in eval mode, identical to the one that was saved."""
    path = Path(path)
    candidate = read_candidate(path)
    try:
        model = build(candidate.arch, device=device)
    except SpecError as e:
        raise WeightsError(f"{path}: its spec does not build ({e})") from None
    try:
        state = load_file(str(path), device=device)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - truncated data or shape mismatches
        raise WeightsError(f"{path}: weights do not fit the spec ({_first_line(e)})") from None
    return model.eval()


def artifact_store(directory: str | Path) -> optuna.artifacts.FileSystemArtifactStore:
    Path(directory).mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(directory))


def upload_weights(trial: optuna.Trial, model: torch.nn.Module, candidate: Candidate, store, scratch: Path) -> str:
    """Stores the trial's weights as an Optuna artifact, so the dashboard lists them and export can fetch them."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"trial-{trial.number}-{candidate.id}.safetensors"
    try:
        save(model, candidate, path)
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
            raise WeightsError(f"trial {trial.number}: weights artifact {artifact_id} not found in the artifact "
                               f"store ({_first_line(e)}); pass --artifact-dir if it lives elsewhere") from None
    candidate = Candidate.from_json(trial.user_attrs["spec"])
    write_text(out.with_suffix(".json"), candidate.to_json(indent=2) + "\n")
    return out


def _os_error(e: Exception) -> Exception:
    """safetensors reports a failed write (a full disk) as "... (os error 28)": the OSError it was, else `e`."""
    found = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
