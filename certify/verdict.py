"""The verdict that opens every report: one level per poison (strong / partial / weak / none) and
the measured reasons, a pure function of the poison's report section, the clean control's and the
thresholds of `VerdictConfig` (the README says which measured tables each default comes from).

The rule:
- the protection is judged by the highest test accuracy an attacker reaches: the model trained
  normally on the release, under each defense of the run, and each recovery attack at any η (final
  accuracies: a peak is chosen on the test set, which an attacker does not have); where none was
  tried, the reasons say that the level holds against training as usual only;
- each accuracy is read at the upper end of its 95 % interval (over the run's seeds, or the test
  set's binomial interval with one seed), the conservative reading for a data owner: the attack
  with the highest upper end is the attacker's best (reports without intervals: the value itself);
- that upper end as a fraction of the clean model's accuracy (the mean over seeds) gives the level: at most `strong` × clean is
  strong, at most `partial` × partial, at most `weak` × weak, above it none;
- strong also needs the certificate to agree: the poison's certified learnability at
  η/σ = `eta_over_sigma` at least `certified_gap` below the clean control's; when it is not, the
  verdict is partial. Where no certificate can be compared (skipped, no clean control, the point
  absent or abstaining), the verdict rests on the measured accuracies alone and the reasons say so.
The clean control `none` gets none.
"""
from __future__ import annotations

from dataclasses import dataclass

from certify.errors import UserError
from certify.curves import point_at
from certify.registry import CONTROL
from certify.validation import check_nonnegative, check_positive

LEVELS = ("strong", "partial", "weak", "none")
SLACK = 1e-9  # float slack: a ratio of exactly a threshold meets it
UNTRIED = ("no defense or recovery attack was tried: the level holds against training as usual only "
           "(JPEG-10, --defense jpeg, undid every l-inf poison measured in reports/POISONS.md)")


@dataclass
class VerdictConfig:
    """Thresholds of the verdict (ratios are the attacker's best accuracy / the clean model's)."""
    strong: float = 0.5  # at most half of clean: the project's target (reports/POISONS.md)
    partial: float = 0.8  # defenses that restore only part of the accuracy (grayscale, AT) stay below
    weak: float = 0.95  # above it the accuracy is within the spread of no protection (random noise)
    eta_over_sigma: float = 0.1  # the certificate's point compared with the clean control
    certified_gap: float = 0.05  # how far below the control's it must certify (random: within 0.007)

    def validate(self, where: str = "config") -> None:
        check_positive(where, **{"verdict.strong": self.strong, "verdict.eta_over_sigma": self.eta_over_sigma})
        check_nonnegative(where, **{"verdict.certified_gap": self.certified_gap})
        if not self.strong <= self.partial <= self.weak <= 1:
            raise UserError(f"{where}: verdict thresholds must satisfy 0 < strong <= partial <= weak <= 1, got "
                            f"strong {self.strong!r}, partial {self.partial!r}, weak {self.weak!r}")
        if self.certified_gap > 1:
            raise UserError(f"{where}: verdict.certified_gap must be at most 1 (an accuracy), "
                            f"got {self.certified_gap!r}")


def attacks(section: dict) -> list[tuple[str, float, list | None]]:
    """(what the attacker did, test accuracy reached, its 95 % interval or None in reports without
    one): undefended, each defense, each recovery's best."""
    emp = section["empirical"]
    out = [("undefended", emp["protected_accuracy"], emp.get("protected_interval"))]
    out += [(d, v["accuracy"], v.get("interval")) for d, v in (emp.get("defenses") or {}).items()]
    for method, rec in (section.get("recovery") or {}).items():
        if rec["curve"]:
            pt = max(rec["curve"], key=lambda p: p["accuracy"])
            value = rec.get("best_accuracy", pt["accuracy"])
            out.append((f"recovery {method} at η/σ = {pt['eta_over_sigma']:g}", value, rec.get("best_interval")))
    return out


def _upper(attack: tuple[str, float, list | None]) -> float:
    """The conservative reading for a data owner: the upper end of the accuracy's interval."""
    return attack[2][1] if attack[2] else attack[1]


def _shown(value: float, interval: list | None) -> str:
    return f"{value:.3f}" if interval is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _seeds_reason(emp: dict) -> str | None:
    """How many seeds the intervals rest on (None for reports without replicates)."""
    k = emp.get("seeds")
    if k is None:
        return None
    if k == 1:
        return ("one seed cannot show the spread between training runs: its intervals cover the test-set "
                "sampling only (run with --seeds 3)")
    return f"over {k} seeds: 95 % Student-t intervals of the per-seed accuracies"


def _level(ratio: float, cfg: VerdictConfig) -> str:
    for level, limit in (("strong", cfg.strong), ("partial", cfg.partial), ("weak", cfg.weak)):
        if ratio <= limit + SLACK:
            return level
    return "none"


def _certificate(section: dict, control: dict | None, cfg: VerdictConfig) -> tuple[bool | None, str]:
    """(does the certificate confirm the protection, or None where it cannot be compared; the reason)."""
    r = cfg.eta_over_sigma
    alone = "judged on the measured accuracies alone"
    cert = section.get("certificate")
    twin = (control or {}).get("certificate")
    if cert is None:
        return None, f"certificate not computed: {alone}"
    if twin is None:
        return None, f"no clean-control certificate to compare with: {alone}"
    pt, cp = point_at(cert["curve"], r), point_at(twin["curve"], r)
    if pt is None or cp is None:
        return None, f"the certificate has no point at η/σ = {r:g}: {alone}"
    if pt["learnability"] is None or cp["learnability"] is None:
        return None, f"the certificate abstains at η/σ = {r:g} (N = {cert['samples']}): {alone}"
    mine, theirs = pt["learnability"], cp["learnability"]
    gap = theirs - mine
    k = cert.get("replicates", 1)
    over = f" (the largest of {k} seeds' bounds, each at α/{k})" if k > 1 else ""
    if gap >= cfg.certified_gap - SLACK:
        return True, (f"certified learnability {mine:.3f}{over}, {gap:.3f} below the clean control's {theirs:.3f} "
                      f"at η/σ = {r:g}")
    return False, (f"certified learnability {mine:.3f}{over} is not {cfg.certified_gap:g} below the clean "
                   f"control's {theirs:.3f} at η/σ = {r:g} (gap {gap:+.3f})")


def judge(section: dict, control: dict | None, cfg: VerdictConfig) -> dict:
    """{"level", "reasons"} of one poison's report section; `control` is the clean control's section
    (None where the run has none)."""
    emp = section["empirical"]
    clean = emp["clean_accuracy"]
    if clean <= 0:
        return {"level": "none", "reasons": ["the clean model's test accuracy is 0: there is nothing to protect"]}
    tried = attacks(section)
    _, protected, interval = tried[0]
    reasons = [f"protected accuracy {_shown(protected, interval)} = {protected / clean:.2f} × clean ({clean:.3f})"]
    reasons += [f"{what} reaches {_shown(a, i)}" for what, a, i in tried[1:]]
    best = max(tried, key=_upper)  # the first of equals: undefended before any defense
    what, value, interval = best
    upper = _upper(best)
    level = _level(upper / clean, cfg)
    limit = {"strong": cfg.strong, "partial": cfg.partial, "weak": cfg.weak}.get(level)
    bound = f"at most {limit:g}" if limit is not None else f"above {cfg.weak:g}"
    if interval is None:
        reasons.append(f"attacker's best: {value:.3f} ({what}) = {value / clean:.2f} × clean ({bound} × clean: {level})")
    else:
        reasons.append(f"attacker's best: {_shown(value, interval)} ({what}); the upper end {upper:.3f} = "
                       f"{upper / clean:.2f} × clean ({bound} × clean: {level})")
    seeds = _seeds_reason(emp)
    if seeds:
        reasons.append(seeds)
    confirmed, why = _certificate(section, control, cfg)
    reasons.append(why)
    if level == "strong" and confirmed is False:
        level = "partial"
        reasons.append("strong needs the certificate to confirm the protection: partial")
    if len(tried) == 1:  # nothing tried against it: the level is the most it can be
        reasons.append(UNTRIED)
    return {"level": level, "reasons": reasons}


def verdicts(poisons: dict[str, dict], cfg: VerdictConfig) -> dict[str, dict]:
    """The verdict of every section of a report's `poisons` (the clean control gets none)."""
    control = poisons.get(CONTROL)
    return {name: ({"level": "none", "reasons": ["the clean control: no perturbation"]} if name == CONTROL
                   else judge(sec, control, cfg))
            for name, sec in poisons.items()}
