"""The scores slice as tasks: SAL of each trained model (from its per-epoch weights), of each model
trained under a defense, and the MI gap and covariance score of each protected model (its features of
its own released training images) against the clean one (of the clean training images); `SLICE.section`
builds the report's `sal_ud`, `mutual_information` and `covariance`. They compute on the CPU (`cpu_only`: no GPU
reserved, whatever device the run's other tasks use)."""
from __future__ import annotations

from certify.context import ModelSpec, RunContext, Slice, images
from certify.registry import CONTROL
from certify.data import Dataset
from certify.scores.covariance import covariance_section
from certify.scores.mutual_info import MIConfig, mi_from_features, paired_features
from certify.scores.sal_ud import SalConfig, sal_matrix, ud_section
from certify.victims import defended_data, defense_spec


def sal_task(data: Dataset, released: dict, victim: dict, *, sal: SalConfig, seed: int, model: ModelSpec,
             device: str) -> dict:
    return {"sal": sal_matrix(model.build(0), victim["checkpoints"], images(released["released"]), data.y_train,
                              sal, seed)}


def defended_sal_task(data: Dataset, released: dict, defended: dict, *, defense: str, params, prepare_seed: int,
                      sal: SalConfig, seed: int, model: ModelSpec, device: str) -> dict:
    """SAL of the model trained under `defense`, on its own training data: the release after the
    defense's `prepare` step (per-batch transforms and loss hooks are training-time only: the loss is
    plain cross-entropy, as for every other model)."""
    _, x, y = defended_data(data, released, defense, params, prepare_seed)
    return {"sal": sal_matrix(model.build(0), defended["checkpoints"], x, y, sal, seed)}


def mi_task(data: Dataset, clean_release: dict, clean: dict, *protected: dict, mi: MIConfig, seed: int,
            model: ModelSpec, device: str) -> dict:
    """MI gap and covariance score from one feature pass of each model over the run's MI training
    images: the clean model on the clean release, the protected model on its own release
    (`protected` = (release, victim); empty for the control, which compares the clean model with itself)."""
    clean_model = model.load(clean["state"])
    x_clean = images(clean_release["released"])
    if protected:
        release, victim = protected
        other, x_released = model.load(victim["state"]), images(release["released"])
    else:
        other, x_released = clean_model, x_clean
    fc, fp, y = paired_features(clean_model, other, x_clean, x_released, data.y_train, mi, seed)
    return {"mi": mi_from_features(fc, fp, mi, seed),
            "covariance": covariance_section(fc.numpy(), fp.numpy(), y.numpy())}


def add_sal(ctx: RunContext, release: str, victim: str, name: str) -> str:
    spec = {"sal": ctx.cfg.sal, "seed": ctx.cfg.seed}
    return ctx.cached("sal", spec, sal_task, (ctx.data_key, release, victim), poison=name, cpu_only=True)


def add_defended_sal(ctx: RunContext, release: str, defended: str, name: str, defense: str) -> str:
    spec = {**defense_spec(ctx, defense), "sal": ctx.cfg.sal, "seed": ctx.cfg.seed}
    return ctx.cached("sal-defended", spec, defended_sal_task, (ctx.data_key, release, defended), poison=name,
                      defense=defense, stage="sal", cpu_only=True)


def add_mi(ctx: RunContext, clean_release: str, clean: str, release: str, victim: str, name: str) -> str:
    spec = {"mi": ctx.cfg.mi, "seed": ctx.cfg.seed}
    inputs = (ctx.data_key, clean_release, clean) + ((release, victim) if victim != clean else ())
    return ctx.cached("mi", spec, mi_task, inputs, poison=name, cpu_only=True)


def run(ctx: RunContext, keys: dict) -> dict:
    """SAL of the clean model (every UD's threshold), unless scores are skipped."""
    if "scores" in ctx.cfg.skip:
        return {}
    return {"sal_clean": add_sal(ctx, keys["clean_release"], keys["clean"], CONTROL)}


def add(ctx: RunContext, keys: dict) -> dict:
    if "scores" in ctx.cfg.skip:
        return {}
    name, release = keys["name"], keys["release"]
    return {"sal": add_sal(ctx, release, keys["victim"], name),
            "defended_sal": {d: add_defended_sal(ctx, release, k, name, d) for d, k in keys["defended"].items()},
            "mi": add_mi(ctx, keys["clean_release"], keys["clean"], release, keys["victim"], name)}


def section(ctx: RunContext, keys: dict, values: dict) -> dict:
    """`sal_ud` (with `defended`: UD of each defense's model against the same clean threshold),
    `mutual_information` and `covariance`."""
    if "sal" not in keys:
        return {}
    cfg = ctx.cfg
    sal_clean, sal, mi = values[keys["sal_clean"]], values[keys["sal"]], values[keys["mi"]]
    defended_sal = {d: values[k] for d, k in keys["defended_sal"].items()}
    ud = ud_section(sal_clean["sal"], sal["sal"], cfg.sal, cfg.profile)
    if defended_sal:
        ud["defended"] = {d: _defended_ud(ud_section(sal_clean["sal"], a["sal"], cfg.sal, cfg.profile))
                          for d, a in defended_sal.items()}
    return {"sal_ud": ud, "mutual_information": mi["mi"], "covariance": mi["covariance"]}


def _defended_ud(s: dict) -> dict:
    """The part of a defended model's UD section the report keeps (threshold and clean #LP are the run's)."""
    return {k: s[k] for k in ("ud", "ud_null_reason", "lp_protected", "sal_protected")}


SLICE = Slice("scores", add, section, run)
