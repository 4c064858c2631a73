"""Handing a study's prepared data to worker processes once: arrays written as .npy files in a
temporary folder of the study's process, memory-mapped read-only by each worker.

A worker then neither reloads nor re-splits the data (data given in memory has no file to reload),
and the pages are shared by the operating system's cache instead of copied into every process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from caviar.data import Standardizer
from caviar.prepared import PreparedData

ARRAYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "classes")
META = "prepared.json"


def write_prepared(data: PreparedData, folder: str | Path) -> Path:
    """Write ``data`` into ``folder`` (one .npy per array, the rest as JSON); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        arr = np.asarray(getattr(data, name))
        np.save(folder / f"{name}.npy", arr, allow_pickle=arr.dtype.kind == "O")
    scaler = data.standardizer
    if scaler is not None and scaler.mean is not None and scaler.std is not None:
        np.save(folder / "mean.npy", scaler.mean)
        np.save(folder / "std.npy", scaler.std)
    meta = {"name": data.name, "standardized": scaler is not None, "fitted": scaler is not None and scaler.fitted}
    target = data.target_scaler
    if target is not None and target.mean is not None and target.std is not None:  # a regression's target
        meta.update(task=data.task, target_mean=float(target.mean[0]), target_std=float(target.std[0]))
    (folder / META).write_text(json.dumps(meta))
    return folder


def read_prepared(folder: str | Path) -> PreparedData:
    """The PreparedData ``write_prepared`` wrote, its arrays memory-mapped read-only."""
    folder = Path(folder)
    meta = json.loads((folder / META).read_text())
    arrays = {}
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except ValueError:  # object classes cannot be mapped; they are small
            arrays[name] = np.load(path, allow_pickle=True)
    scaler = None
    if meta["standardized"]:
        scaler = Standardizer(np.load(folder / "mean.npy"), np.load(folder / "std.npy")) if meta["fitted"] else None
        scaler = scaler or Standardizer()
    extra = {}
    if "target_mean" in meta:
        mean, std = np.array([meta["target_mean"]]), np.array([meta["target_std"]])
        extra = {"task": meta["task"], "target_scaler": Standardizer(mean, std)}
    return PreparedData(**arrays, standardizer=scaler, name=meta["name"], **extra)
