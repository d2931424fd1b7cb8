"""The scores slice as tasks: SAL of each trained model (from its per-epoch weights) and the MI gap
of each protected model against the clean one; `sections` builds the report's two sections."""
from __future__ import annotations

from certify.context import ModelSpec, RunContext, images
from certify.data import Dataset
from certify.scores.mutual_info import MIConfig, mi_section
from certify.scores.sal_ud import SalConfig, sal_matrix, ud_section


def sal_task(data: Dataset, released: dict, victim: dict, *, sal: SalConfig, seed: int, model: ModelSpec,
             device: str) -> dict:
    return {"sal": sal_matrix(model.build(0), victim["checkpoints"], images(released["released"]), data.y_train,
                              sal, seed)}


def mi_task(data: Dataset, clean: dict, *protected: dict, mi: MIConfig, seed: int, model: ModelSpec,
            device: str) -> dict:
    clean_model = model.load(clean["state"])
    other = model.load(protected[0]["state"]) if protected else clean_model  # the control: itself
    return {"mi": mi_section(clean_model, other, data.x_test, data.y_test, mi, seed)}


def add_sal(ctx: RunContext, release: str, victim: str, name: str) -> str:
    spec = {"sal": ctx.cfg.sal, "seed": ctx.cfg.seed}
    return ctx.cached("sal", spec, sal_task, (ctx.data_key, release, victim), poison=name)


def add_mi(ctx: RunContext, clean: str, victim: str, name: str) -> str:
    spec = {"mi": ctx.cfg.mi, "seed": ctx.cfg.seed}
    inputs = (ctx.data_key, clean) + ((victim,) if victim != clean else ())
    return ctx.cached("mi", spec, mi_task, inputs, poison=name)


def sections(ctx: RunContext, sal_clean: dict, sal: dict, mi: dict) -> dict:
    return {"sal_ud": ud_section(sal_clean["sal"], sal["sal"], ctx.cfg.sal, ctx.cfg.profile),
            "mutual_information": mi["mi"]}
