"""The verdict that opens every report: one level per poison (strong / partial / weak / none) and
the measured reasons, a pure function of the poison's report section, the clean control's and the
thresholds of `VerdictConfig` (the README says which measured tables each default comes from).

The rule:
- the protection is judged by the attacker's best: the model trained normally on the release (its
  final accuracy: the peak `peak_protected_accuracy` is chosen on the test set, which an attacker
  does not have), the model trained under each defense of the run, the same for every other
  architecture of the victim panel (`--victims`, each against its own clean model), and each
  recovery attack at the point it early-stops on (the η whose accuracy on the attacker's own clean split is highest,
  `recovery.M.chosen`; its test accuracy is what counts);
- each accuracy is read at the upper end of its 95 % interval (over the run's seeds, or the test
  set's binomial interval with one seed), the conservative reading for a data owner (reports without
  intervals: the value itself);
- each is compared with what the attacker would get from clean data the same way: a defense's with
  the clean control trained under that defense (the control's `empirical.defenses[d]`, where the run
  has it; else the clean model, and the reasons say so), undefended training and recovery with the
  clean model (means over seeds); the highest of these ratios gives the level: at most `strong` is
  strong, at most `partial` partial, at most `weak` weak, above it none;
- strong needs the minimum attacker suite (`MINIMUM_SUITE`: JPEG at two qualities, grayscale, a
  recovery attack) to have run; where part of it did not, the level is at most partial and the
  reasons say what is untried and which flags would run it;
- strong also needs the certificate to agree: the poison's certified learnability at
  η/σ = `eta_over_sigma` at least `certified_gap` below the clean control's; when it is not, the
  verdict is partial. Where no certificate can be compared (skipped, no clean control, the point
  absent or abstaining), the verdict rests on the measured accuracies alone and the reasons say so.
  Where the certificate's surrogate and the victim differ by more than `surrogate_gap` in test
  accuracy, a reason says the certificate does not speak for this victim.
The clean control `none` gets none.
"""
from __future__ import annotations

from dataclasses import dataclass

from certify.curves import early_stop, point_at
from certify.errors import UserError
from certify.registry import CONTROL
from certify.validation import check_nonnegative, check_positive

LEVELS = ("strong", "partial", "weak", "none")
SLACK = 1e-9  # float slack: a ratio of exactly a threshold meets it


@dataclass(frozen=True)
class Suite:
    """The attacks a strong verdict needs to have survived."""
    defenses: tuple[str, ...]
    recovery: bool  # at least one recovery attack


# JPEG at two qualities (ISS's JPEG-10, and 50 for a poison tuned to survive one quality), grayscale,
# and one recovery attack: JPEG-10 alone restored AR, PUE, EM and TAP to 0.73-0.96 of clean
# (reports/POISONS.md) while undefended they read strong. It is also the run's default `defenses`.
MINIMUM_SUITE = Suite(defenses=("jpeg", "jpeg50", "grayscale"), recovery=True)


@dataclass
class VerdictConfig:
    """Thresholds of the verdict (ratios are the attacker's best accuracy / the clean model's under
    the same defense)."""
    strong: float = 0.5  # at most half of clean: the project's target (reports/POISONS.md)
    partial: float = 0.8  # defenses that restore only part of the accuracy (grayscale, AT) stay below
    weak: float = 0.95  # above it the accuracy is within the spread of no protection (random noise)
    eta_over_sigma: float = 0.1  # the certificate's point compared with the clean control
    certified_gap: float = 0.05  # how far below the control's it must certify (random: within 0.007)
    # surrogate vs victim test accuracy beyond which the certificate does not speak for the victim
    # (OPS: surrogate 0.299, victim 0.497)
    surrogate_gap: float = 0.1

    def validate(self, where: str = "config") -> None:
        check_positive(where, **{"verdict.strong": self.strong, "verdict.eta_over_sigma": self.eta_over_sigma})
        check_nonnegative(where, **{"verdict.certified_gap": self.certified_gap,
                                    "verdict.surrogate_gap": self.surrogate_gap})
        if not self.strong <= self.partial <= self.weak <= 1:
            raise UserError(f"{where}: verdict thresholds must satisfy 0 < strong <= partial <= weak <= 1, got "
                            f"strong {self.strong!r}, partial {self.partial!r}, weak {self.weak!r}")
        for name in ("certified_gap", "surrogate_gap"):
            if getattr(self, name) > 1:
                raise UserError(f"{where}: verdict.{name} must be at most 1 (an accuracy), "
                                f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Attack:
    what: str  # what the attacker did
    accuracy: float  # the test accuracy it reached (mean over seeds)
    interval: list | None  # its 95 % interval (None in reports without one)
    reference: float  # the clean model's accuracy the same way (under the same defense)
    against: str  # how `reference` is named in the reasons
    victim: str | None = None  # the architecture attacked, where the run has a victim panel

    @property
    def label(self) -> str:
        return self.what if self.victim is None else f"{self.what} ({self.victim})"

    @property
    def upper(self) -> float:
        """The conservative reading for a data owner: the upper end of the accuracy's interval."""
        return self.interval[1] if self.interval else self.accuracy

    @property
    def ratio(self) -> float:
        return self.upper / self.reference


def _shown(value: float, interval: list | None) -> str:
    return f"{value:.3f}" if interval is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _defended(emp: dict, twins: dict, clean: float, victim: str | None = None) -> tuple[list[Attack], list[str]]:
    """Each defense's attack on one victim (`emp`: its accuracies) against the clean control under the
    same defense (`twins`: the control's defenses on that victim), and the reasons for those compared
    with the clean model instead (no control under that defense)."""
    on = f" on {victim}" if victim else ""
    out, notes = [], []
    for d, v in (emp.get("defenses") or {}).items():
        twin = (twins.get(d) or {}).get("accuracy")
        if twin is not None and twin > 0:
            out.append(Attack(d, v["accuracy"], v.get("interval"), twin, f"the clean control under {d}", victim))
        else:
            out.append(Attack(d, v["accuracy"], v.get("interval"), clean, "clean", victim))
            why = "trained to 0 under it" if twin is not None else "not trained under it in this run"
            notes.append(f"{d}{on} compared with the clean model trained normally: the clean control was {why}")
    return out, notes


def _panel(section: dict, control: dict | None, crafting: str | None) -> tuple[list[Attack], list[str]]:
    """The attacks on each victim architecture of the panel other than the crafting model: trained
    normally (against its own clean model) and under each defense; and their reasons."""
    twins = (control or {}).get("victims") or {}
    out, reasons = [], []
    for arch, v in (section.get("victims") or {}).items():
        if arch == crafting:
            continue
        clean = v["clean_accuracy"]
        if clean <= 0:
            reasons.append(f"{arch}: its clean model's test accuracy is 0, so it is not judged")
            continue
        out.append(Attack("undefended", v["protected_accuracy"], v.get("protected_interval"), clean,
                          f"{arch}'s clean model", arch))
        reasons.append(f"{arch}: protected accuracy {_shown(v['protected_accuracy'], v.get('protected_interval'))} = "
                       f"{v['protected_accuracy'] / clean:.2f} × its clean model ({clean:.3f})")
        defended, notes = _defended(v, (twins.get(arch) or {}).get("defenses") or {}, clean, arch)
        out += defended
        reasons += [_reached(a) for a in defended] + notes
    return out, reasons


def _reached(a: Attack) -> str:
    under = "" if a.against == "clean" else f" = {a.accuracy / a.reference:.2f} × {a.against} ({a.reference:.3f})"
    return f"{a.label} reaches {_shown(a.accuracy, a.interval)}{under}"


def _recovered(section: dict, clean: float, victim: str | None = None) -> tuple[list[Attack], list[str]]:
    """Each recovery attack at the point it early-stops on, and the reasons for curves that could
    not be early-stopped (their test-set peak stands in)."""
    out, notes = [], []
    for method, rec in (section.get("recovery") or {}).items():
        chosen = rec.get("chosen") or early_stop(rec["curve"])
        if chosen is None:
            continue
        value = rec.get("best_accuracy", chosen["accuracy"])
        r = f"{chosen['eta_over_sigma']:g}"
        if chosen["on"] == "attacker":
            held = rec.get("attacker_images")
            what = (f"recovery {method} early-stopped on the attacker's "
                    f"{f'{held} ' if held is not None else ''}clean images (η/σ = {r})")
        else:
            what = f"recovery {method} at its test-set peak (η/σ = {r})"
            notes.append(f"recovery {method} records no accuracy on the attacker's own split: its test-set peak "
                         "stands in, an upper bound on what the attacker can pick")
        out.append(Attack(what, value, rec.get("best_interval"), clean, "clean", victim))
    return out, notes


def untried(section: dict, suite: Suite = MINIMUM_SUITE) -> str | None:
    """The reason naming what of the minimum suite did not run, and how to run it (None: all ran)."""
    ran = set((section["empirical"].get("defenses") or {}))
    missing = [d for d in suite.defenses if d not in ran]
    recovered = any(r.get("curve") for r in (section.get("recovery") or {}).values())
    if suite.recovery and not recovered:
        missing.append("a recovery attack")
    if not missing:
        return None
    how = []
    if any(d not in ran for d in suite.defenses):
        how.append(f"run with --defense {','.join(sorted(ran | set(suite.defenses), key=_suite_order(suite)))}")
    if suite.recovery and not recovered:
        how.append("drop recovery and certify from --skip (recovery starts from the certificate's surrogate)")
    return (f"untried: {', '.join(missing)}: strong needs the minimum attacker suite, so the level is at most "
            f"partial ({'; '.join(how)})")


def _suite_order(suite: Suite):
    """The suite's defenses first in its order, then the run's others by name."""
    return lambda d: (suite.defenses.index(d), "") if d in suite.defenses else (len(suite.defenses), d)


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
                   f"control's {theirs:.3f} at η/σ = {r:g} (certified drop {gap:+.3f})")


def _surrogate_reason(section: dict, cfg: VerdictConfig) -> str | None:
    """Where the certified surrogate and the victim differ by more than `surrogate_gap`: the
    certificate bounds a model unlike the one an attacker trains."""
    surrogate = (section.get("certificate") or {}).get("surrogate_accuracy")
    victim = section["empirical"]["protected_accuracy"]
    if surrogate is None or abs(surrogate - victim) <= cfg.surrogate_gap + SLACK:
        return None
    return (f"the certificate's surrogate reaches {surrogate:.3f} while the victim reaches {victim:.3f} "
            f"(more than {cfg.surrogate_gap:g} apart): the certificate does not speak for this victim")


# larger budgets to try, in the poison's own norm; an l0 poison (OPS's one pixel) has none to vary
LARGER_BUDGETS = {"linf": "8/255,16/255", "l2": "1.0,2.0"}


def remedy(best: Attack, name: str, norm: str = "linf") -> str:
    """What would raise a level the attacker's best holds down: the reason that names the attack
    also names the next thing to try (a larger budget, where the norm has one, is measured by
    `certify plan`)."""
    budgets = LARGER_BUDGETS.get(norm)
    larger = (f"a larger budget (`certify plan --poison {name} --budgets {budgets}` measures larger budgets)"
              if budgets else "")
    what = best.what
    if what == "undefended":
        stronger = "a stronger poison (reports/POISONS.md ranks them)"
        return f"to raise the level: {larger + ' or ' if larger else ''}{stronger}"
    if what.startswith("jpeg"):
        restores, instead = "JPEG compression of the training set", "a JPEG-robust poison (low-frequency or larger-scale patterns)"
    elif what == "grayscale":
        restores, instead = "grayscale conversion", "a poison that perturbs luminance, not colour alone"
    elif what.startswith("recovery"):
        restores, instead = "a recovery attack near the trained weights", "a poison crafted against weight perturbation (pue)"
    elif what.startswith("at"):
        restores, instead = "adversarial training", "a poison crafted against adversarial training (rem)"
    else:
        restores, instead = f"training under {what}", "a poison crafted to survive it (with its augmentations in the loop)"
    return f"to raise the level: {restores} restores the accuracy, so try {instead}{' or ' + larger if larger else ''}"


def judge(section: dict, control: dict | None, cfg: VerdictConfig, name: str = "POISON",
          crafting: str | None = None) -> dict:
    """{"level", "reasons"} of one poison's report section; `control` is the clean control's section
    (None where the run has none); `name` the poison's, for the commands the reasons suggest;
    `crafting` the crafting model's architecture, where the run has a victim panel (`victims`): the
    attacker's best is then over every victim, and the reasons name the victim of each attack."""
    emp = section["empirical"]
    clean = emp["clean_accuracy"]
    if clean <= 0:
        return {"level": "none", "reasons": ["the clean model's test accuracy is 0: there is nothing to protect"]}
    mine = crafting if section.get("victims") else None
    undefended = Attack("undefended", emp["protected_accuracy"], emp.get("protected_interval"), clean, "clean", mine)
    twins = ((control or {}).get("empirical") or {}).get("defenses") or {}
    defended, notes = _defended(emp, twins, clean, mine)
    recovered, rec_notes = _recovered(section, clean, mine)
    panel, panel_reasons = _panel(section, control, crafting)
    tried = [undefended, *defended, *recovered, *panel]
    craft = f" on {mine} (the crafting model)" if mine else ""
    reasons = [f"protected accuracy{craft} {_shown(undefended.accuracy, undefended.interval)} = "
               f"{undefended.accuracy / clean:.2f} × clean ({clean:.3f})"]
    reasons += [_reached(a) for a in [*defended, *recovered]] + notes + rec_notes + panel_reasons
    best = max(tried, key=lambda a: a.ratio)  # the first of equals: undefended before any defense
    level = _level(best.ratio, cfg)
    limit = {"strong": cfg.strong, "partial": cfg.partial, "weak": cfg.weak}.get(level)
    bound = f"at most {limit:g}" if limit is not None else f"above {cfg.weak:g}"
    against = f"{best.against} ({best.reference:.3f})" if best.against != "clean" else f"clean ({clean:.3f})"
    if best.interval is None:
        reasons.append(f"attacker's best: {best.accuracy:.3f} ({best.label}) = {best.ratio:.2f} × {against} "
                       f"({bound}: {level})")
    else:
        reasons.append(f"attacker's best: {_shown(best.accuracy, best.interval)} ({best.label}); the upper end "
                       f"{best.upper:.3f} = {best.ratio:.2f} × {against} ({bound}: {level})")
    if level != "strong":
        reasons.append(remedy(best, name, (section.get("budget") or {}).get("norm", "linf")))
    seeds = _seeds_reason(emp)
    if seeds:
        reasons.append(seeds)
    confirmed, why = _certificate(section, control, cfg)
    reasons.append(why)
    surrogate = _surrogate_reason(section, cfg)
    if surrogate:
        reasons.append(surrogate)
    if level == "strong" and confirmed is False:
        level = "partial"
        reasons.append("strong needs the certificate to confirm the protection: partial (more draws, "
                       "--samples, tighten the bound; a poison crafted for the certificate, pue, lowers it)")
    missing = untried(section)
    if missing:
        reasons.append(missing)
        if level == "strong":
            level = "partial"
    return {"level": level, "reasons": reasons}


def verdicts(poisons: dict[str, dict], cfg: VerdictConfig, crafting: str | None = None) -> dict[str, dict]:
    """The verdict of every section of a report's `poisons` (the clean control gets none); `crafting`:
    the crafting model's architecture (where the sections have a victim panel)."""
    control = poisons.get(CONTROL)
    return {name: ({"level": "none", "reasons": ["the clean control: no perturbation"]} if name == CONTROL
                   else judge(sec, control, cfg, name, crafting))
            for name, sec in poisons.items()}
