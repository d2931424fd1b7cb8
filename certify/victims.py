"""The training slice: the clean model (run-level), the victim trained normally on each release and
one trained under each defense; its section is the report's `empirical`. `add_victim` also trains
the independent clean model the certificate slice plans (the report's weight-space scale)."""
from __future__ import annotations

import functools

import torch

from certify.context import ModelSpec, RunContext, Slice, images, task_device
from certify.data import Dataset
from certify.models import trainable
from certify.registry import CONTROL
from certify.seeding import derive
from certify.training import TrainConfig, evaluate, per_class_accuracy, train


def train_task(data: Dataset, released: dict, *, seed: int, training: TrainConfig, checkpoints: bool, desc: str,
               model: ModelSpec, device: str) -> dict:
    """A model trained normally on a release: weights, history, test accuracy per class, accuracy on
    its whole (un-augmented) training set, which tells a victim that cannot fit its data from a
    protected one, and (for SAL) per-epoch weights."""
    net = model.build(seed, task_device(device))
    kept: list[dict] = []
    x = images(released["released"])
    hist = train(net, x, data.y_train, training, seed, x_test=data.x_test,
                 y_test=data.y_test, epoch_callback=_snapshots(kept) if checkpoints else None, desc=desc)
    return {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "history": hist, "checkpoints": kept,
            "per_class": per_class_accuracy(net, data.x_test, data.y_test, model.classes, training.eval_batch),
            "train_accuracy": evaluate(net, x, data.y_train, training.eval_batch)}


def _snapshots(kept: list):
    """An epoch callback that appends a CPU copy of the weights after every epoch (what SAL scores)."""
    def snapshot(epoch, m):
        kept.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

    return snapshot


def _keeps_checkpoints(ctx: RunContext, *fields: str, scored: bool = True) -> dict:
    """`cached` arguments for a model SAL may score (`scored`): per-epoch weights are kept unless scores
    are skipped. Whether they are kept is not part of the key (the weights are the same): a stored model
    without them, or without one of `fields` (added to the artifact since), is trained again."""
    keep = scored and "scores" not in ctx.cfg.skip
    return {"accept": lambda a: all(f in a for f in fields) and (bool(a.get("checkpoints")) or not keep),
            "unkeyed": {"checkpoints": keep}}


def add_victim(ctx: RunContext, release: str, name: str, seed_name: str = "victim", stage: str = "train",
               scored: bool = True, arch: str | None = None) -> str:
    """The model trained normally on `release`; it keeps per-epoch weights when SAL will score them
    (never where not `scored`: the independently trained models the certificate measures against, the
    panel's other architectures). `arch`: a victim of the panel (default: the crafting model)."""
    model, training = _victim_of(ctx, arch)
    spec = {"seed": derive(ctx.cfg.seed, seed_name), "training": training}
    kept = _keeps_checkpoints(ctx, "per_class", "train_accuracy", scored=scored and arch is None)
    accept = kept["accept"]
    return ctx.cached("model", spec, train_task, (ctx.data_key, release), poison=name,
                      accept=lambda a: accept(a) and fits(model, a.get("state")),
                      unkeyed={**kept["unkeyed"], "desc": f"train {name}{_on(arch)}"}, stage=f"{stage}{_on(arch)}",
                      model=model)


def fits(model: ModelSpec, state) -> bool:
    """Whether a stored state is the weights of `model` (a cached artifact of another shape, or of
    other contents, is trained again rather than failing where it is loaded)."""
    want = _shapes(model)
    return (isinstance(state, dict) and set(state) == set(want)
            and all(isinstance(v, torch.Tensor) and tuple(v.shape) == want[k] for k, v in state.items()))


@functools.lru_cache(maxsize=None)
def _shapes(model: ModelSpec) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.build(0).state_dict().items()}


def _victim_of(ctx: RunContext, arch: str | None):
    """(model spec, training) of a victim: the crafting model's, or a panel architecture's."""
    if arch is None or arch == ctx.model.arch:
        return ctx.model, ctx.cfg.train
    return ctx.model.of(arch), ctx.cfg.victim_training(arch)


def _on(arch: str | None) -> str:
    """What names a panel victim's task (its stage in progress and records)."""
    return f" ({arch})" if arch else ""


def defended_data(data: Dataset, released: dict, defense: str, params, prepare_seed: int):
    """(defense, x, y): the defense and the training data after its `prepare` step (if it has one)."""
    from defenses.base import make

    d = make(defense, params)
    x, y = images(released["released"]), data.y_train
    if d.prepare is not None:
        x, y = d.prepare(x, y, prepare_seed)
    return d, x, y


def defended_task(data: Dataset, released: dict, *, defense: str, params, seed: int, prepare_seed: int,
                  training: TrainConfig, checkpoints: bool, model: ModelSpec, device: str) -> dict:
    """Final and peak test accuracy of a victim trained on a release under `defense` (+ per-epoch
    weights for SAL)."""
    d, x, y = defended_data(data, released, defense, params, prepare_seed)
    net = model.build(seed, task_device(device))
    kept: list[dict] = []
    hist = train(net, x, y, training, seed, x_test=data.x_test, y_test=data.y_test,
                 batch_transform=d.batch_transform, loss_fn=d.loss_fn,
                 epoch_callback=_snapshots(kept) if checkpoints else None, desc=f"train + {defense}")
    return {"accuracy": hist["final_test_accuracy"], "peak_accuracy": hist["peak_test_accuracy"],
            "history": hist["test_accuracy"], "checkpoints": kept}


def defense_spec(ctx: RunContext, defense: str) -> dict:
    """What decides a defense's training data: its name, parameters and the seed of its `prepare`."""
    from defenses.base import DEFENSES

    cfg = ctx.cfg
    return {"defense": defense, "params": DEFENSES.params_for(defense, cfg),
            "prepare_seed": derive(cfg.seed, "defense", defense)}


def add_defended(ctx: RunContext, release: str, name: str, defense: str, arch: str | None = None) -> str:
    from defenses.base import DEFENSES

    model, training = _victim_of(ctx, arch)
    spec = {**defense_spec(ctx, defense), "seed": derive(ctx.cfg.seed, "victim"), "training": training}
    kept = _keeps_checkpoints(ctx, scored=arch is None)
    return ctx.cached("defended", spec, defended_task, (ctx.data_key, release), poison=name, defense=defense,
                      code=DEFENSES.code(defense), model=model, stage=f"defended{_on(arch)}",
                      **kept)


def distance(model: ModelSpec, state_a: dict, state_b: dict) -> float:
    """l2 distance between two models' trainable parameters."""
    a = torch.cat([p.flatten() for p in trainable(model.load(state_a)).values()])
    b = torch.cat([p.flatten() for p in trainable(model.load(state_b)).values()])
    return float((a - b).norm())


def empirical_section(clean: dict, protected: dict, defended: dict[str, dict]) -> dict:
    ch, ph = clean["history"], protected["history"]
    section = {"clean_accuracy": ch["final_test_accuracy"], "protected_accuracy": ph["final_test_accuracy"],
               "peak_protected_accuracy": ph["peak_test_accuracy"],
               "clean_train_accuracy": clean["train_accuracy"], "protected_train_accuracy": protected["train_accuracy"],
               "clean_history": ch["test_accuracy"],
               "protected_history": ph["test_accuracy"],
               "per_class": {"clean": clean["per_class"], "protected": protected["per_class"]}}
    if defended:
        section["defenses"] = {d: {"accuracy": art["accuracy"], "peak_accuracy": art["peak_accuracy"]}
                               for d, art in defended.items()}
    return section


def run(ctx: RunContext, keys: dict) -> dict:
    """The clean model: the control's victim (one task with it)."""
    return {"clean": add_victim(ctx, keys["clean_release"], CONTROL)}


def add(ctx: RunContext, keys: dict) -> dict:
    name, release = keys["name"], keys["release"]
    return {"victim": add_victim(ctx, release, name),
            "defended": {d: add_defended(ctx, release, name, d) for d in ctx.cfg.defenses}}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    return {"empirical": empirical_section(values[keys["clean"]], values[keys["victim"]],
                                           {d: values[k] for d, k in keys["defended"].items()})}


SLICE = Slice("victims", add, section, run)
