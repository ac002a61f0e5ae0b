"""Foraging on Kubernetes: the manifests of a run (an Indexed Job of workers), and driving a cluster.

``render`` makes the objects from ``ManifestOptions``; ``write`` puts them in a kustomize directory;
``Cluster`` applies, inspects and deletes them; ``run_status`` reads the run's progress from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from forager.k8s.cluster import Applied, Cluster, ClusterError, WorkerPod
from forager.k8s.manifests import ManifestError, ManifestOptions, file_name, kustomization, render
from forager.k8s.status import RunStatus, run_status

#: The first line of every file ``write`` makes.
HEADER = "# Written by `forager k8s render`: change the options (or an overlay), not this file.\n"

__all__ = [
    "Applied",
    "Cluster",
    "ClusterError",
    "ManifestError",
    "ManifestOptions",
    "RunStatus",
    "WorkerPod",
    "render",
    "run_status",
    "to_yaml",
    "write",
]


def to_yaml(obj: dict[str, Any]) -> str:
    """``obj`` as YAML, keys in the order they were made."""
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def write(objects: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write each object to ``out/<kind>.yaml`` and a ``kustomization.yaml`` listing them."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, obj in [*((file_name(o), o) for o in objects), ("kustomization.yaml", kustomization(objects))]:
        path = out / name
        path.write_text(HEADER + to_yaml(obj))
        written.append(path)
    return written
