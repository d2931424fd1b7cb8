"""`--sigma auto`: the largest sigma on the grid at which the clean model keeps a median accuracy of
at least `ratio` x its unperturbed accuracy, from draws of a seed stream of its own (never reused
in a certificate). The grid is scanned upward and stops at the first sigma that fails, since
accuracy falls with sigma. An explicit --sigma is used as given."""
from __future__ import annotations

import numpy as np

from certify.certificate.config import SIGMA_GRID
from certify.certificate.draws import draw_accuracies, draws_per_pass
from certify.context import ModelSpec, task_device
from certify.data import Dataset
from certify.training import evaluate


def sigma_task(data: Dataset, clean: dict, *, seed: int, draws: int, ratio: float, eval_batch: int, grid: tuple,
               model: ModelSpec, device: str) -> dict:
    """The auto rule on the clean model: `draws` draws per sigma of `grid`, kept while their median
    accuracy is at least `ratio` x the unperturbed one (`smoothing.sigma_draws`, `sigma_ratio`)."""
    net = model.load(clean["state"], task_device(device))
    base = evaluate(net, data.x_test, data.y_test, eval_batch)
    tried, chosen = [], None
    for sigma in grid:
        acc = draw_accuracies(net, sigma, seed, 0, draws, data.x_test, data.y_test, eval_batch,
                              draws_per_pass(next(net.parameters()).device.type))
        median_ratio = float(np.median(acc)) / base if base > 0 else 0.0
        tried.append({"sigma": sigma, "median_ratio": median_ratio, "median_accuracy": float(np.median(acc))})
        if median_ratio < ratio:
            break
        chosen = sigma
    return {"tried": tried, "chosen": chosen, "base": base, "ratio": ratio, "draws": draws}


def fixed(sigma: float) -> dict:
    return {"fixed": float(sigma)}


def sigma_of(art: dict) -> tuple[float, dict]:
    """The sigma a rule's artifact chose, and the report's `sigma_rule` (the artifact records the
    ratio and draws it was made with, so nothing else of the configuration is read)."""
    if "fixed" in art:
        return art["fixed"], {"rule": "fixed", "tried": []}
    rule = {"rule": "auto", "ratio": art["ratio"], "draws": art["draws"],
            "unperturbed_accuracy": art["base"], "tried": art["tried"]}
    if art["chosen"] is None:
        rule["warning"] = (f"no sigma on the grid kept {art['ratio']} x the unperturbed accuracy; "
                           f"using the smallest, {SIGMA_GRID[0]}")
        return SIGMA_GRID[0], rule
    return float(art["chosen"]), rule
