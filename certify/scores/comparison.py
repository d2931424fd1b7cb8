"""The literature's measures side by side: report.json's `comparison`, from the poisons' sections.

One row per poison of the run (the clean control `none` included, marked) with what the three papers
measure: protected accuracy and its drop from clean training, the certified learnability at
η/σ = ETA_OVER_SIGMA and its gap to the clean control, UD ("How far", arXiv 2509.08058), the MI gap
and the covariance score (MI-UE), and accuracy and UD under each defense of the run (ISS: JPEG-10 and
grayscale). Across the poisons (the control is not a point): Spearman's rank correlation of MI gap
and of covariance score with the accuracy drop, as the MI-UE paper correlates MI gap with accuracy,
each with its permutation p and bootstrap interval (certify.scores.ranking).
"""
from __future__ import annotations

from certify.curves import REFERENCE_ETA_SIGMA as ETA_OVER_SIGMA, point_at
from certify.registry import CONTROL
from certify.scores.ranking import spearman


def _certified(section: dict) -> tuple[float | None, str]:
    """(learnability, status) at ETA_OVER_SIGMA: status certified | abstains | absent."""
    cert = section.get("certificate")
    point = point_at((cert or {}).get("curve"), ETA_OVER_SIGMA)
    if point is None:
        return None, "absent"
    return point["learnability"], "certified" if point["learnability"] is not None else "abstains"


def _row(name: str, sec: dict, control_certified: float | None) -> dict:
    emp = sec["empirical"]
    ud = sec.get("sal_ud") or {}
    certified, status = _certified(sec)
    defended_ud = ud.get("defended") or {}
    return {
        "poison": name, "control": name == CONTROL,
        "clean_accuracy": emp["clean_accuracy"], "protected_accuracy": emp["protected_accuracy"],
        "accuracy_drop": emp["clean_accuracy"] - emp["protected_accuracy"],
        "certified": certified, "certified_status": status,
        # clean minus poisoned, as accuracy_drop: positive where the poison protects
        "certified_drop": (control_certified - certified
                           if certified is not None and control_certified is not None and name != CONTROL else None),
        "ud": ud.get("ud"),
        "mi_gap": (sec.get("mutual_information") or {}).get("gap"),
        "covariance": (sec.get("covariance") or {}).get("score"),
        "within_total": (sec.get("covariance") or {}).get("within_total_protected"),
        "defenses": {d: {"accuracy": v["accuracy"], "ud": (defended_ud.get(d) or {}).get("ud")}
                     for d, v in (emp.get("defenses") or {}).items()},
    }


def _correlation(rows: list[dict], field: str, seed: int) -> dict:
    points = [r for r in rows if not r["control"] and r[field] is not None]
    return spearman([r[field] for r in points], [r["accuracy_drop"] for r in points],
                    names=[r["poison"] for r in points], seed=seed)


def comparison(poisons: dict[str, dict], seed: int = 0) -> dict:
    """report.json's `comparison` from its `poisons` sections (pure: dicts in, dict out); `seed` seeds
    the correlations' Monte-Carlo permutations and bootstrap."""
    control_certified = _certified(poisons[CONTROL])[0] if CONTROL in poisons else None
    rows = [_row(name, sec, control_certified) for name, sec in poisons.items()]
    defenses = list(dict.fromkeys(d for r in rows for d in r["defenses"]))
    return {
        "eta_over_sigma": ETA_OVER_SIGMA, "control": CONTROL if CONTROL in poisons else None,
        "defenses": defenses, "rows": rows,
        "correlations": {"mi_gap": _correlation(rows, "mi_gap", seed),
                         "covariance": _correlation(rows, "covariance", seed)},
        "definitions": {
            "accuracy_drop": "clean model's test accuracy - protected model's test accuracy",
            "certified_drop": f"the clean control's certified learnability at eta/sigma = {ETA_OVER_SIGMA} minus "
                              "this poison's (positive: the poison lowers what can be certifiably learned)",
            "covariance": ("mean over classes of the trace of the class covariance of L2-normalised penultimate "
                           "features of training images, the protected model's of its poisoned images / the "
                           "clean model's of the clean images"),
            "within_total": ("the protected model's within-class spread over its total spread on its poisoned "
                             "training images (lower: tighter classes relative to all features)"),
            "defended_ud": ("UD of the model trained under the defense (SAL on its prepared training data) "
                            "against the undefended clean model's threshold and #LP"),
            "correlations": ("Spearman's rho across the poisons (the clean control is not a point) with the "
                             "accuracy drop; p from scipy.stats.spearmanr (a t approximation, rough for few "
                             "poisons); permutation p: the share of pairings of the ranks with |rho| at least "
                             "the observed one, over all n! (exact, up to 8 poisons) or 100,000 seeded random "
                             "ones; 95 % interval: percentile bootstrap over the poisons, 10,000 seeded resamples"),
        },
    }
