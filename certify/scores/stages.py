"""The scores slice as tasks: SAL of each trained model (from its per-epoch weights), of each model
trained under a defense, and the MI gap and covariance score of each protected model against the
clean one; `sections` builds the report's sections. They compute on the CPU (`cpu_only`: no GPU
reserved, whatever device the run's other tasks use)."""
from __future__ import annotations

from certify.context import ModelSpec, RunContext, images
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


def mi_task(data: Dataset, clean: dict, *protected: dict, mi: MIConfig, seed: int, model: ModelSpec,
            device: str) -> dict:
    """MI gap and covariance score from one feature pass of each model over the run's MI images."""
    clean_model = model.load(clean["state"])
    other = model.load(protected[0]["state"]) if protected else clean_model  # the control: itself
    fc, fp, y = paired_features(clean_model, other, data.x_test, data.y_test, mi, seed)
    return {"mi": mi_from_features(fc, fp, mi, seed), "covariance": covariance_section(fc.numpy(), fp.numpy(),
                                                                                        y.numpy())}


def add_sal(ctx: RunContext, release: str, victim: str, name: str) -> str:
    spec = {"sal": ctx.cfg.sal, "seed": ctx.cfg.seed}
    return ctx.cached("sal", spec, sal_task, (ctx.data_key, release, victim), poison=name, cpu_only=True)


def add_defended_sal(ctx: RunContext, release: str, defended: str, name: str, defense: str) -> str:
    spec = {**defense_spec(ctx, defense), "sal": ctx.cfg.sal, "seed": ctx.cfg.seed}
    return ctx.cached("sal-defended", spec, defended_sal_task, (ctx.data_key, release, defended), poison=name,
                      defense=defense, stage="sal", cpu_only=True)


def add_mi(ctx: RunContext, clean: str, victim: str, name: str) -> str:
    spec = {"mi": ctx.cfg.mi, "seed": ctx.cfg.seed}
    inputs = (ctx.data_key, clean) + ((victim,) if victim != clean else ())
    # stored MI artifacts from before the covariance score are computed again
    return ctx.cached("mi", spec, mi_task, inputs, poison=name, accept=lambda a: "covariance" in a, cpu_only=True)


def sections(ctx: RunContext, sal_clean: dict, sal: dict, mi: dict, defended_sal: dict[str, dict]) -> dict:
    """`sal_ud` (with `defended`: UD of each defense's model against the same clean threshold),
    `mutual_information` and `covariance`."""
    cfg = ctx.cfg
    ud = ud_section(sal_clean["sal"], sal["sal"], cfg.sal, cfg.profile)
    if defended_sal:
        ud["defended"] = {d: _defended_ud(ud_section(sal_clean["sal"], a["sal"], cfg.sal, cfg.profile))
                          for d, a in defended_sal.items()}
    return {"sal_ud": ud, "mutual_information": mi["mi"], "covariance": mi["covariance"]}


def _defended_ud(s: dict) -> dict:
    """The part of a defended model's UD section the report keeps (threshold and clean #LP are the run's)."""
    return {k: s[k] for k in ("ud", "ud_null_reason", "lp_protected", "sal_protected")}
