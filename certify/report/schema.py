"""The JSON Schema of report.json (`ue-certify/report/v1`) and its validation.

The schema follows the user-facing contract (spec/interface.md). Additional properties are
allowed everywhere (new fields may be added freely); a per-poison section that was not requested is
absent, but when present it must carry its fields. Abstaining certificate entries hold null.
"""
from __future__ import annotations

import math
import sys
from typing import Any

from certify.errors import UserError

SCHEMA_ID = "ue-certify/report/v1"
PLAN_SCHEMA_ID = "ue-certify/plan/v1"  # plan.json's: certify.planning writes it, certify.views reads it
MAX_DEPTH = 32  # a report nests about 8 deep; the bound lets every reader recurse over it safely

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_NONNEG = {"type": "number", "minimum": 0}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_FRACTION_OR_NULL = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_OPEN_UNIT = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_ACC_LIST = {"type": "array", "items": _FRACTION}
_INTERVAL = {"type": "array", "items": _FRACTION, "minItems": 2, "maxItems": 2}  # [low, high], e.g. 95 %
_SEEDS = {"type": "integer", "minimum": 1}  # how many replicate seeds K a summary is over


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, **extra) -> dict:
    props = dict(required)
    props.update(optional or {})
    return {"type": "object", "required": list(required), "properties": props, **extra}


BUDGET = _obj({
    "norm": {"enum": ["linf", "l2", "l0", "none"]},
    "epsilon": _NONNEG,
    "measured": _NONNEG,
}, {  # audits: the images changed at all, and the per-image norm at the percentiles 0/25/50/75/100
    "changed_fraction": _FRACTION,
    "per_image_percentiles": {"type": "object", "additionalProperties": _NONNEG},
})

DEFENSE = _obj({"accuracy": _FRACTION, "peak_accuracy": _FRACTION},
               {"interval": _INTERVAL, "peak_interval": _INTERVAL})  # intervals: newer reports

EMPIRICAL = _obj(
    {"clean_accuracy": _FRACTION, "protected_accuracy": _FRACTION, "peak_protected_accuracy": _FRACTION},
    {
        "defenses": {"type": "object", "additionalProperties": DEFENSE},
        "clean_history": _ACC_LIST,
        "protected_history": _ACC_LIST,
        # newer reports: accuracy on the model's own whole training set (clean, or the release), un-augmented;
        # with `seeds` > 1 the first replicate's, as the histories
        "clean_train_accuracy": _FRACTION,
        "protected_train_accuracy": _FRACTION,
        # test accuracy per class (label order) of the clean and the protected model; null: no test images
        "per_class": _obj({"clean": {"type": "array", "items": _FRACTION_OR_NULL},
                           "protected": {"type": "array", "items": _FRACTION_OR_NULL}}),
        # newer reports: the accuracies above are means over `seeds` replicates, with intervals
        "clean_interval": _INTERVAL,
        "protected_interval": _INTERVAL,
        "peak_protected_interval": _INTERVAL,
        "interval_method": {"enum": ["clopper-pearson", "student-t"]},
        "seeds": _SEEDS,
        "confidence": _OPEN_UNIT,
    },
)

_FRACTIONS_BY_NAME = {"type": "object", "additionalProperties": _FRACTION}

# one architecture of the victim panel (`--victims`; newer reports): its own clean model, the model
# trained on the release and under each defense (the first three are means with `seeds`, as in EMPIRICAL)
VICTIM = _obj(
    {"clean_accuracy": _FRACTION, "protected_accuracy": _FRACTION, "peak_protected_accuracy": _FRACTION,
     "defenses": {"type": "object", "additionalProperties": DEFENSE}},
    {"clean_train_accuracy": _FRACTION, "protected_train_accuracy": _FRACTION,
     "clean_interval": _INTERVAL, "protected_interval": _INTERVAL, "peak_protected_interval": _INTERVAL},
)
VICTIM_REPLICATE = _obj({"clean_accuracy": _FRACTION, "protected_accuracy": _FRACTION,
                         "peak_protected_accuracy": _FRACTION, "defenses": _FRACTIONS_BY_NAME,
                         "defenses_peak": _FRACTIONS_BY_NAME})
# the report's top level: who crafted, the panel in the user's order, each one's training recipe
PANEL = _obj({"crafting_model": _STR, "architectures": {"type": "array", "items": _STR, "minItems": 1},
              "training": {"type": "object", "additionalProperties": {"type": "object"}}},
             {"parameters": {"type": "object", "additionalProperties": _COUNT}})

# one replicate seed's numbers (newer reports); its seed is unique within the list (validate_report)
REPLICATE = _obj(
    {"seed": {"type": "integer"}, "clean_accuracy": _FRACTION, "protected_accuracy": _FRACTION,
     "peak_protected_accuracy": _FRACTION, "defenses": _FRACTIONS_BY_NAME, "defenses_peak": _FRACTIONS_BY_NAME},
    {"sigma": {"type": "number", "exclusiveMinimum": 0},  # that seed's certificate σ
     "certified": {"type": "object", "additionalProperties": _FRACTION_OR_NULL},  # keyed by eta_over_sigma
     "recovery": _FRACTIONS_BY_NAME,
     "victims": {"type": "object", "additionalProperties": VICTIM_REPLICATE}},
)

CURVE_POINT = _obj({
    "eta": _NONNEG,
    "eta_over_sigma": _NONNEG,
    "q_bar": _FRACTION,
    "k": {"type": ["integer", "null"], "minimum": 1},
    "learnability": _FRACTION_OR_NULL,
    "q_lower": _FRACTION,
    "k_lower": {"type": ["integer", "null"], "minimum": 1},
    "lower": _FRACTION_OR_NULL,
})

CERTIFICATE = _obj(
    {
        "sigma": {"type": "number", "exclusiveMinimum": 0},
        "q": _OPEN_UNIT,
        "alpha": _OPEN_UNIT,
        "samples": {"type": "integer", "minimum": 1},
        "surrogate": {"enum": ["rwp", "standard"]},
        "surrogate_recipe": _obj({"levels": {"type": "array", "items": _NONNEG}, "epochs": _COUNT},
                                 {"init": {"enum": ["victim", "scratch"]}}),
        "surrogate_accuracy": _FRACTION,
        "empirical_quantile": _FRACTION,
        "sigma_rule": _obj({
            "rule": {"enum": ["auto", "fixed"]},
            "tried": {"type": "array", "items": _obj({"sigma": _NONNEG, "median_ratio": _NUM_OR_NULL})},
        }),
        "coverage": {"enum": ["per-eta", "bonferroni"]},
        "curve": {"type": "array", "items": CURVE_POINT},
        "max_certified_eta": {"type": ["number", "null"], "minimum": 0},
        "draws": _ACC_LIST,
    },
    {
        "theta_norm": {"type": ["number", "null"], "minimum": 0},
        "independent_distance": {"type": ["number", "null"], "minimum": 0},
        # newer reports: K models trained independently on the release, their l2 distances to the
        # surrogate and how many lie within the certified eta (absent where K = 0)
        "independent_models": _obj({"k": {"type": "integer", "minimum": 1}, "distances": {"type": "array", "items": _NONNEG},
                         "within": _COUNT, "max_certified_eta": {"type": ["number", "null"], "minimum": 0}}),
        "replicates": _SEEDS,  # newer reports: a bound over K replicates, each at level replicate_alpha
        "replicate_alpha": _OPEN_UNIT,
    },
)

SAL_UD = _obj(
    {
        "ud": _NUM_OR_NULL,
        "ud_null_reason": {"type": ["string", "null"]},
        "lp_protected": _NUM_OR_NULL,
        "lp_clean": _NUM_OR_NULL,
        "beta": _NUM_OR_NULL,
        "rho": _NUM_OR_NULL,
        "layers": _COUNT,
        "profile": {"enum": ["quick", "reference"]},
    },
    {
        "sal_protected": {"type": "array", "items": {"type": "array", "items": _NUM_OR_NULL}},
        "sal_clean": {"type": "array", "items": {"type": "array", "items": _NUM_OR_NULL}},
    },
    # A null UD must say why.
    allOf=[{"if": {"properties": {"ud": {"type": "null"}}, "required": ["ud"]},
            "then": {"properties": {"ud_null_reason": {"type": "string", "minLength": 1}}}}],
)

# newer reports: which images the MI gap and the covariance score are measured on (older: test images)
_IMAGES_FROM = {"enum": ["training", "test"]}

MUTUAL_INFORMATION = _obj({
    "estimator": _STR,
    "projections": _COUNT,
    "images": _COUNT,
    "clean": _NUM_OR_NULL,
    "protected": _NUM_OR_NULL,
    "gap": _NUM_OR_NULL,
    "histogram_gap": _NUM_OR_NULL,
}, {"images_from": _IMAGES_FROM})

# A null score must say why. Newer reports: total spreads and within / total ratios beside the score.
COVARIANCE = _obj(
    {"score": _NUM_OR_NULL, "score_null_reason": {"type": ["string", "null"]}, "clean": _NUM_OR_NULL,
     "protected": _NUM_OR_NULL, "images": _COUNT},
    {"total_clean": _FRACTION_OR_NULL, "total_protected": _FRACTION_OR_NULL, "total_score": _NUM_OR_NULL,
     "within_total_clean": _NUM_OR_NULL, "within_total_protected": _NUM_OR_NULL, "images_from": _IMAGES_FROM},
    allOf=[{"if": {"properties": {"score": {"type": "null"}}, "required": ["score"]},
            "then": {"properties": {"score_null_reason": {"type": "string", "minLength": 1}}}}],
)

# the literature's measures side by side (certify.scores.comparison); a null correlation must say why
# (older reports: p_exact up to 8 poisons; newer: p_permutation for any n, and a bootstrap interval)
_RHO_OR_NULL = {"type": ["number", "null"], "minimum": -1, "maximum": 1}
CORRELATION = _obj(
    {"rho": _RHO_OR_NULL, "p": _FRACTION_OR_NULL, "n": _COUNT, "reason": {"type": ["string", "null"]}},
    {"p_exact": _FRACTION_OR_NULL, "p_permutation": _FRACTION_OR_NULL,
     "p_method": {"enum": ["exact", "monte-carlo", None]},
     "ci": {"type": ["array", "null"], "items": {"type": "number", "minimum": -1, "maximum": 1},
            "minItems": 2, "maxItems": 2},
     "ci_reason": {"type": ["string", "null"]}},
    allOf=[{"if": {"properties": {"rho": {"type": "null"}}, "required": ["rho"]},
            "then": {"properties": {"reason": {"type": "string", "minLength": 1}}}}],
)
COMPARISON = _obj({
    "eta_over_sigma": _NONNEG,
    "control": {"type": ["string", "null"]},
    "defenses": {"type": "array", "items": _STR},
    "rows": {"type": "array", "items": _obj({
        "poison": _STR, "control": {"type": "boolean"}, "protected_accuracy": _FRACTION,
        "accuracy_drop": {"type": "number", "minimum": -1, "maximum": 1},
        "certified": _FRACTION_OR_NULL, "certified_status": {"enum": ["certified", "abstains", "absent"]},
        "ud": _NUM_OR_NULL, "mi_gap": _NUM_OR_NULL, "covariance": _NUM_OR_NULL,
        "defenses": {"type": "object", "additionalProperties": _obj({"accuracy": _FRACTION, "ud": _NUM_OR_NULL})},
    }, {  # clean minus poison (reports before it stored its negative as certified_gap); within / total of
        # the covariance score (reports before it measured no such ratio)
        "certified_drop": _NUM_OR_NULL, "certified_gap": _NUM_OR_NULL, "within_total": _NUM_OR_NULL})},
    "correlations": _obj({"mi_gap": CORRELATION, "covariance": CORRELATION}),
})

RECOVERY_METHOD = _obj(
    {
        "start": _STR,
        "bn": {"enum": ["frozen", "re-estimated"]},
        "constraint": {"enum": ["ball", "sphere"]},
        "curve": {"type": "array",
                  "items": _obj({"eta": _NONNEG, "eta_over_sigma": _NONNEG, "accuracy": _FRACTION},
                                # newer reports: the accuracy on the attacker's own split D_r
                                {"attacker_accuracy": _FRACTION})},
    },
    {"best_accuracy": _FRACTION, "best_interval": _INTERVAL,  # over replicates; newer reports
     "attacker_images": _COUNT,
     # newer reports: the point the attacker early-stops on (certify.recovery.early_stop); "on": "test"
     # where the curve has no attacker-split accuracies (the test-set peak stands in)
     "chosen": {"oneOf": [{"type": "null"}, _obj({"index": _COUNT, "eta": _NONNEG, "eta_over_sigma": _NONNEG,
                                                  "accuracy": _FRACTION, "attacker_accuracy": _FRACTION_OR_NULL,
                                                  "on": {"enum": ["attacker", "test"]}})]}},
)

VERDICT = _obj({"level": {"enum": ["strong", "partial", "weak", "none"]}, "reasons": {"type": "array", "items": _STR}})

# the training images shown in figures/samples-<poison>.png (drawn at run time: the JSON holds no pixels)
SAMPLES = _obj({"indices": {"type": "array", "items": _COUNT}})

POISON = _obj(
    {"budget": BUDGET, "empirical": EMPIRICAL},
    {
        "certificate": CERTIFICATE,
        "sal_ud": SAL_UD,
        "mutual_information": MUTUAL_INFORMATION,
        "covariance": COVARIANCE,
        "recovery": {"type": "object", "additionalProperties": RECOVERY_METHOD},
        "verdict": VERDICT,
        "samples": SAMPLES,
        "origin": _STR,  # "built-in" or a plugin's "distribution version"; newer reports
        "replicates": {"type": "array", "items": REPLICATE, "minItems": 1},  # in seed order; newer reports
        "victims": {"type": "object", "additionalProperties": VICTIM},  # the panel, by architecture
    },
)

# A report is either from before replicate seeds (none of their fields) or has all of them, so that
# every reader can rely on them together: top-level `seeds` decides which.
_INTERVAL_FIELDS = ["clean_interval", "protected_interval", "peak_protected_interval", "interval_method", "seeds",
                    "confidence"]
_REPLICATED_POISON = {
    "required": ["replicates"],
    "properties": {
        "empirical": {"required": _INTERVAL_FIELDS, "properties": {
            "defenses": {"additionalProperties": {"required": ["interval", "peak_interval"]}}}},
        "certificate": {"required": ["replicates", "replicate_alpha"]},
        "victims": {"additionalProperties": {"required": _INTERVAL_FIELDS[:3], "properties": {
            "defenses": {"additionalProperties": {"required": ["interval", "peak_interval"]}}}}},
        "recovery": {"additionalProperties": {"if": {"properties": {"curve": {"minItems": 1}}},
                                              "then": {"required": ["best_accuracy", "best_interval"]}}},
    },
}
_UNREPLICATED_POISON = {
    "not": {"anyOf": [{"required": ["replicates"]},
                      {"properties": {"empirical": {"anyOf": [{"required": [f]} for f in _INTERVAL_FIELDS]}},
                       "required": ["empirical"]}]},
}
_SEEDS_CONSISTENT = {"if": {"required": ["seeds"]},
                     "then": {"properties": {"poisons": {"additionalProperties": _REPLICATED_POISON}}},
                     "else": {"properties": {"poisons": {"additionalProperties": _UNREPLICATED_POISON}}}}

# one executed task of the stage graph: where it ran and when (seconds from the run's start)
TASK_RECORD = _obj({"stage": _STR, "poison": {"type": ["string", "null"]}, "defense": {"type": ["string", "null"]},
                    "node": _STR, "start": _NONNEG, "end": _NONNEG})

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "ue-certify report v1",
    **_obj(
        {
            "schema": {"const": SCHEMA_ID},
            "created": _STR,
            "command": _STR,
            "seed": {"type": "integer"},
            "config": _obj({}, {"profile": _STR}),
            "environment": _obj({
                "python": _STR, "torch": _STR, "device": _STR,
                "executor": {"enum": ["ray", "serial"]}, "workers": _COUNT,
            }),
            "dataset": _obj({
                "name": _STR, "n_train": _COUNT, "n_test": _COUNT,
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "classes": _COUNT,
            }, {"test_digest": {"type": "string", "minLength": 1},  # of the test images and labels; newer reports
                "test_source": _STR,  # `--test`, or the dataset's own `NAME:test` split; newer reports
                "resized_to": {"type": "integer", "minimum": 1},  # --image-size
                "class_names": {"type": "array", "items": _STR}}),  # in label order; newer reports
            "model": _obj({"arch": _STR, "parameters": _COUNT}),
            "poisons": {"type": "object", "additionalProperties": POISON},
        },
        {"seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "uniqueItems": True},
         "timings": {"type": "object", "additionalProperties": _NONNEG},
         "warnings": {"type": "array", "items": _STR},
         "comparison": COMPARISON,
         "victims": PANEL,
         "execution": _obj({"executor": {"enum": ["ray", "serial"]}, "cached": {"type": "integer", "minimum": 0},
                            "tasks": {"type": "array", "items": TASK_RECORD}})},
        allOf=[_SEEDS_CONSISTENT],
    ),
}


def format_path(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            s = str(p)
            ok = s and all(c.isalnum() or c in "_-" for c in s)
            out += (("." if out else "") + s) if ok else f"[{s!r}]"
    return out or "(top level)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    if isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list):
        text = f"a list of {len(value)}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(err) -> tuple[str, str]:
    """(path, what is wrong) for one jsonschema error, in one line."""
    path = list(err.absolute_path)
    v = err.validator
    if v == "required":
        inst = err.instance if isinstance(err.instance, dict) else {}
        missing = [k for k in err.validator_value if k not in inst]
        name = missing[0] if missing else "?"
        return format_path(path + [name]), "missing (required field)"
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return format_path(path), f"must be {want}, got {_short(err.instance)}"
    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        return format_path(path), f"must be one of {', '.join(map(repr, allowed))}, got {_short(err.instance)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sym = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return format_path(path), f"must be {sym} {err.validator_value}, got {_short(err.instance)}"
    if v == "minLength":
        return format_path(path), f"must be a non-empty string, got {_short(err.instance)}"
    if v in ("minItems", "maxItems"):
        bound = "at least" if v == "minItems" else "at most"
        return format_path(path), f"must hold {bound} {err.validator_value} item(s), got {_short(err.instance)}"
    if v == "uniqueItems":
        return format_path(path), f"must not repeat a value, got {_short(err.instance)}"
    if v == "not":  # the one `not` of the schema: replicate-seed fields without the top-level `seeds`
        return format_path(path), ("has replicate-seed fields (replicates, intervals) but the report has no "
                                   "top-level seeds: it must have all of them or none")
    return format_path(path), " ".join(err.message.split())[:160]


def _in_float_range(value: Any) -> bool:
    """False for NaN, infinity and integers beyond the largest float; True for anything not a number."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= sys.float_info.max  # exact: an int compares with a float without converting
    return True


def _unusable(report: Any) -> tuple[list, str] | None:
    """(path, what is wrong) of the first value in document order that no reader can use: nested
    deeper than MAX_DEPTH, NaN, infinity, or an integer too large for a float (the gate, tables and
    figures compute in floats). Walked with a stack: a hostile document cannot exhaust recursion."""
    stack = [([], report)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_DEPTH:
            return path, f"nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, dict):
            stack.extend((path + [k], v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((path + [i], v) for i, v in reversed(list(enumerate(value))))
        elif not _in_float_range(value):
            return path, "must be a finite number within float range (not NaN, infinity or a larger integer)"
    return None


def _repeated_seed(report: dict) -> tuple[list, str] | None:
    """(path, what is wrong) of the first replicate whose seed an earlier one of its poison already has:
    JSON Schema cannot say that one field is unique across a list of objects."""
    for name, sec in report["poisons"].items():
        first: dict[int, int] = {}
        for i, rep in enumerate(sec.get("replicates", [])):
            if rep["seed"] in first:
                return (["poisons", name, "replicates", i, "seed"],
                        f"repeats seed {rep['seed']} of replicates[{first[rep['seed']]}] (seeds must be distinct)")
            first[rep["seed"]] = i
    return None


def validate_report(report: Any, where: str = "report") -> None:
    """Raise UserError naming the path of the first problem (one line); return None if valid."""
    import jsonschema

    if not isinstance(report, dict):
        raise UserError(f"{where}: must be a JSON object, got {_short(report)}")
    if report.get("schema") != SCHEMA_ID:
        raise UserError(f"{where}: schema must be {SCHEMA_ID!r}, got {_short(report.get('schema'))} "
                        "(not a ue-certify report v1)")
    # Before the schema: its messages repr the offending value, which must not recurse without bound.
    unusable = _unusable(report)
    if unusable is not None:
        raise UserError(f"{where}: {format_path(unusable[0])}: {unusable[1]}")
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    err = next(iter(validator.iter_errors(report)), None)
    if err is not None:
        # Descend into the most specific error (jsonschema's own relevance rule) of the first one found.
        err = jsonschema.exceptions.best_match([err]) or err
        path, what = _describe(err)
        raise UserError(f"{where}: {path}: {what}")
    repeated = _repeated_seed(report)
    if repeated is not None:
        raise UserError(f"{where}: {format_path(repeated[0])}: {repeated[1]}")
