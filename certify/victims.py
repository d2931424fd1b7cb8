"""The training slice: victims trained normally on a release, under each defense, and the
independent clean model whose distance gives the report its weight-space scale."""
from __future__ import annotations

import torch

from certify.context import ModelSpec, RunContext, images, task_device
from certify.data import Dataset
from certify.models import trainable
from certify.seeding import derive
from certify.training import TrainConfig, per_class_accuracy, train


def train_task(data: Dataset, released: dict, *, seed: int, training: TrainConfig, checkpoints: bool, desc: str,
               model: ModelSpec, device: str) -> dict:
    """A model trained normally on a release: weights, history, test accuracy per class and (for
    SAL) per-epoch weights."""
    net = model.build(seed, task_device(device))
    kept = []

    def snapshot(epoch, m):
        kept.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

    hist = train(net, images(released["released"]), data.y_train, training, seed, x_test=data.x_test,
                 y_test=data.y_test, epoch_callback=snapshot if checkpoints else None, desc=desc)
    return {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "history": hist, "checkpoints": kept,
            "per_class": per_class_accuracy(net, data.x_test, data.y_test, model.classes, training.eval_batch)}


def add_victim(ctx: RunContext, release: str, name: str, seed_name: str = "victim", stage: str = "train") -> str:
    """The model trained normally on `release`; it keeps per-epoch weights when SAL will score them.

    Whether they are kept is not part of the key (the weights are the same): a stored model
    without them is trained again when a later run needs them (and so is one stored before models
    carried their per-class accuracies)."""
    keep = "scores" not in ctx.cfg.skip
    spec = {"seed": derive(ctx.cfg.seed, seed_name), "training": ctx.cfg.train}
    return ctx.cached("model", spec, train_task, (ctx.data_key, release), poison=name,
                      accept=lambda a: "per_class" in a and (bool(a["checkpoints"]) or not keep),
                      unkeyed={"checkpoints": keep, "desc": f"train {name}"}, stage=stage)


def defended_task(data: Dataset, released: dict, *, defense: str, params, seed: int, prepare_seed: int,
                  training: TrainConfig, model: ModelSpec, device: str) -> dict:
    """Final and peak test accuracy of a victim trained on a release under `defense`."""
    from defenses.base import DEFENSES

    d = DEFENSES.get(defense).factory(params)
    x, y = images(released["released"]), data.y_train
    if d.prepare is not None:
        x, y = d.prepare(x, y, prepare_seed)
    net = model.build(seed, task_device(device))
    hist = train(net, x, y, training, seed, x_test=data.x_test, y_test=data.y_test,
                 batch_transform=d.batch_transform, loss_fn=d.loss_fn, desc=f"train + {defense}")
    return {"accuracy": hist["final_test_accuracy"], "peak_accuracy": hist["peak_test_accuracy"],
            "history": hist["test_accuracy"]}


def add_defended(ctx: RunContext, release: str, name: str, defense: str) -> str:
    from defenses.base import DEFENSES

    cfg = ctx.cfg
    spec = {"defense": defense, "params": DEFENSES.params(defense, cfg.defense_params.get(defense, {}), dataset=cfg.dataset,
                                                profile=cfg.profile),
            "seed": derive(cfg.seed, "victim"), "prepare_seed": derive(cfg.seed, "defense", defense),
            "training": cfg.train}
    return ctx.cached("defended", spec, defended_task, (ctx.data_key, release), poison=name, defense=defense)


def distance(model: ModelSpec, state_a: dict, state_b: dict) -> float:
    """l2 distance between two models' trainable parameters."""
    a = torch.cat([p.flatten() for p in trainable(model.load(state_a)).values()])
    b = torch.cat([p.flatten() for p in trainable(model.load(state_b)).values()])
    return float((a - b).norm())


def empirical_section(clean: dict, protected: dict, defended: dict[str, dict]) -> dict:
    ch, ph = clean["history"], protected["history"]
    section = {"clean_accuracy": ch["final_test_accuracy"], "protected_accuracy": ph["final_test_accuracy"],
               "peak_protected_accuracy": ph["peak_test_accuracy"], "clean_history": ch["test_accuracy"],
               "protected_history": ph["test_accuracy"],
               "per_class": {"clean": clean["per_class"], "protected": protected["per_class"]}}
    if defended:
        section["defenses"] = {d: {k: v for k, v in art.items() if k != "history"} for d, art in defended.items()}
    return section
