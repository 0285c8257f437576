"""The gradient noise scale of a model, measured along training: :func:`noise_scale_of_model`
(B_simple = tr D / ‖ḡ‖² of the cross-entropy loss on a probe set, in chunks of examples) and
:class:`NoiseScaleTracker`, an evaluation hook of :func:`sgdnoise.train.train` that records
it. The formula from a given G: (N, P) is :func:`sgdnoise.covariance.noise_scale`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sgdnoise.grads import per_example_grads
from sgdnoise.validate import check_positive_int

__all__ = ["NoiseScaleTracker", "noise_scale_of_model"]


def noise_scale_of_model(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    chunk_size: int = 256,
) -> dict[str, float]:
    """B_simple = tr D / ‖ḡ‖² of ``model`` on (x, y) for the cross-entropy loss, in chunks.

    Per-example gradients G_c: (n_c, P) of each chunk are reduced at once to Σ‖g_i‖² and
    Σ g_i (float64), so memory is O(chunk_size · P): tr D = (1/N) Σ‖g_i‖² − ‖ḡ‖².
    Returns {"b_simple", "trace_D", "grad_norm_sq", "n"}."""
    chunk = check_positive_int("chunk_size", chunk_size)
    n = int(x.shape[0])
    sq = 0.0
    total = None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, chunk):
            Gc = per_example_grads(model, nn.functional.cross_entropy, x[start:start + chunk],
                                   y[start:start + chunk]).to(torch.float64)
            sq += float((Gc * Gc).sum())
            s = Gc.sum(0)
            total = s if total is None else total + s
    finally:
        model.train(was_training)
    gbar = total / n
    g2 = float(gbar @ gbar)
    tr = max(sq / n - g2, 0.0)
    return {"b_simple": tr / g2 if g2 > 0 else math.inf, "trace_D": tr, "grad_norm_sq": g2,
            "n": n}


class NoiseScaleTracker:
    """An ``on_epoch`` callback (or ``hooks=`` entry, through :meth:`on_eval`) for
    :func:`sgdnoise.train.train` that records B_simple (:func:`noise_scale_of_model`) of
    ``model`` (the very module being trained: pass it to ``train(..., model=model)``) on the
    probe set (x: float inputs, y) after each evaluation, every ``every`` epochs.

    ``rows``: list of dicts (epoch, step, train_error, test_error, train_loss, b_simple,
    trace_D, grad_norm_sq); ``frame()`` gives them as a DataFrame."""

    def __init__(self, model: torch.nn.Module, x: Tensor, y: Tensor, *, every: int = 1,
                 chunk_size: int = 256, label: str = "") -> None:
        self.model, self.x, self.y = model, x, y
        self.every = check_positive_int("every", every)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.label = label
        self.rows: list[dict[str, Any]] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        if int(rec["epoch"]) % self.every:
            return
        x = self.x.to(next(self.model.parameters()).dtype)
        ns = noise_scale_of_model(self.model, x, self.y, chunk_size=self.chunk_size)
        row = {k: rec[k] for k in ("epoch", "step", "train_loss", "train_error", "test_error")}
        row.update({k: ns[k] for k in ("b_simple", "trace_D", "grad_norm_sq")})
        row["run"] = self.label
        self.rows.append(row)

    def on_eval(self, rec: dict[str, Any]) -> None:
        self(rec)

    def frame(self) -> Any:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

