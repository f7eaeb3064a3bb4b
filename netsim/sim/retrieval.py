"""Received images as retrieval queries (the multi-hop paper's semantically aligned retrieval).

The clean database images are hashed once; every reconstruction's hash then ranks the database
by Hamming distance and gets its AP@topk, with relevance = same class. Averaged over a hop's
receptions this is the paper's retrieval mAP.
"""
from __future__ import annotations

import torch

from netsim.data import DataError, image_labels, load_workload_images
from netsim.metrics import average_precisions


class RetrievalDatabase:
    """Hashes and class labels of a labelled database (``netsim.scenario.Retrieval``)."""

    def __init__(self, spec, hasher, device: torch.device):
        images, ids = load_workload_images(spec.database)
        names = image_labels(ids)
        if names is None:
            raise DataError("retrieval.database: images need class labels (CIFAR-10, or a folder with one "
                            "subfolder per class)")
        self.classes = {c: i for i, c in enumerate(sorted(set(names)))}
        self.labels = torch.tensor([self.classes[c] for c in names], device=device)
        with torch.no_grad():
            self.hashes = torch.cat([hasher(chunk.to(device)) for chunk in images.split(256)])
        self.topk = spec.topk

    def __len__(self) -> int:
        return len(self.labels)

    def average_precisions(self, h: torch.Tensor, image_ids: list[str]) -> list[float]:
        """AP@topk of each query hash ``h`` [B, N_H]; a query whose class the database lacks gets 0."""
        names = image_labels(image_ids)
        if names is None:
            raise DataError("retrieval: the flow's images need class labels (CIFAR-10 or class subfolders)")
        labels = torch.tensor([self.classes.get(c, -1) for c in names], device=h.device)
        return average_precisions(h, labels, self.hashes, self.labels, self.topk).tolist()
