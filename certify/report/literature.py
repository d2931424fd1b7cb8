"""The report's comparison with the literature: report.json's `comparison` as a document section.

One table with a row per poison of the run (the three papers' measures: accuracy, certified
learnability, UD, MI gap, covariance score, accuracy and UD under the ISS defenses), one with the rank
correlations across poisons, and the definitions. A run with a single poison gets its one-row table
(and the control's row) and correlations that say they need 3 poisons; a report without
`comparison` (older reports, a run of the clean control alone) gets no section. A run with a victim
panel (`--victims`) adds the transfer table: each poison's protection on every victim architecture.
"""
from __future__ import annotations

from certify.registry import CONTROL
from certify.report.document import Bullets, Code, Paragraph, Section, Strong, Table
from certify.report.figures import victim_names, victim_of
from certify.report.text import DASH, acc, num, ratio, signed

ISS = ("jpeg", "grayscale")  # always shown: the defenses the MI-UE paper says it is weakest against


def _ratio(x) -> str:
    return DASH if x is None else f"{x:.3f}"


def _certified(row: dict) -> str:
    return {"abstains": "abstains", "absent": DASH}.get(row["certified_status"]) or acc(row["certified"])


def _permutation_p(c: dict) -> str:
    """The permutation p with its kind; older reports hold only an exact p, up to 8 poisons."""
    if c.get("p_permutation") is not None:
        return f"{num(c['p_permutation'], 3)} ({c['p_method']})"
    return DASH if c.get("p_exact") is None else f"{num(c['p_exact'], 3)} (exact)"


def _interval(c: dict) -> str:
    ci = c.get("ci")
    return f"[{signed(ci[0])}, {signed(ci[1])}]" if ci else DASH


def _correlations(comp: dict) -> Table:
    rows = []
    for label, key in (("MI gap", "mi_gap"), ("covariance score", "covariance")):
        c = comp["correlations"][key]
        note = "; ".join(r for r in (c["reason"], c.get("ci_reason")) if r)
        rows.append([f"{label} vs accuracy drop", DASH if c["rho"] is None else signed(c["rho"]), _interval(c),
                     num(c["p"], 3), _permutation_p(c), str(c["n"]), note])
    return Table(["across poisons", "Spearman ρ", "95 % bootstrap interval", "p (scipy, t approx.)",
                  "permutation p", "poisons", "note"], rows)


def certified_drop(row: dict) -> float | None:
    """The clean control's certified learnability minus the poison's (reports before the drop stored
    its negative, `certified_gap`)."""
    if "certified_drop" in row:
        return row["certified_drop"]
    return None if row.get("certified_gap") is None else -row["certified_gap"]


def _transferred(v: dict | None) -> str:
    """A victim's protected accuracy with, in brackets, its fraction of the same victim's clean accuracy."""
    if v is None:
        return DASH
    return f"{acc(v['protected_accuracy'])} ({ratio(v['protected_accuracy'], v['clean_accuracy'])})"


def _transfer(report: dict) -> list:
    """The transfer table of a run with a victim panel ([] without, or without a poison besides the control,
    whose protected model is a clean one)."""
    crafting, *others = victim_names(report) or [None]
    poisons = {n: s for n, s in report["poisons"].items() if n != CONTROL}
    if not others or not poisons:
        return []
    rows = [[name] + [_transferred(victim_of(report, sec, a)) for a in [crafting] + others]
            for name, sec in poisons.items()]
    return [Paragraph([Strong("Transfer across architectures."), " Protected accuracy of each victim architecture "
                       "(in brackets: as a fraction of the same architecture's clean model). Transfer is measured "
                       f"here as the protection crafted on the crafting model {crafting} seen by the other "
                       "architectures; how this compares with the MI-UE paper's and APBench's transfer results "
                       "is discussed in ", Code("reports/POISONS.md"), " (\"Transfer to other architectures\")."]),
            Table(["poison", f"{crafting} (crafting)"] + others, rows)]


def comparison_section(report: dict) -> Section | None:
    comp = report.get("comparison")
    transfer = _transfer(report)
    if not comp:
        return Section("Comparison with the literature", transfer) if transfer else None
    r = comp["eta_over_sigma"]
    control = comp["control"]
    defenses = list(ISS) + [d for d in comp["defenses"] if d not in ISS]
    defended_ud = [d for d in comp["defenses"] if any((row["defenses"].get(d) or {}).get("ud") is not None
                                                      for row in comp["rows"])]
    header = ["poison", "protected acc", "acc drop", f"certified @ η/σ={r:g}",
              f"certified drop below {control}" if control else "certified drop", "UD", "MI gap", "covariance score",
              "within / total"]
    header += [f"{d} acc" for d in defenses] + [f"UD {d}" for d in defended_ud]
    rows = []
    for row in comp["rows"]:
        cells = [row["poison"], acc(row["protected_accuracy"]), f"{row['accuracy_drop']:.3f}", _certified(row),
                 DASH if certified_drop(row) is None else signed(certified_drop(row)),
                 _ratio(row["ud"]), num(row["mi_gap"], 3), _ratio(row["covariance"]),
                 _ratio(row.get("within_total"))]
        cells += [acc((row["defenses"].get(d) or {}).get("accuracy")) or DASH for d in defenses]
        cells += [_ratio((row["defenses"].get(d) or {}).get("ud")) for d in defended_ud]
        rows.append(cells)
    d = comp["definitions"]
    notes = Bullets([
        [Strong("acc drop"), f": {d['accuracy_drop']}."],
        [Strong("certified"), f": the certified upper bound on learnability (see Summary); certified drop: {d.get('certified_drop') or d.get('certified_gap')}."],
        [Strong("UD"), ": #LP(model) / #LP(clean model) (“How far are we from true unlearnability?”); 1 = as "
                       "learnable as clean data, toward 0 = unlearnable, above 1 = more layers sharp than the clean "
                       "model's (the model keeps learning, often the wrong features)."],
        [Strong("MI gap"), ": sliced MI of the clean model's features with itself minus with the protected "
                           "model's (MI-UE; see each poison's Mutual information)."],
        [Strong("covariance score"), f": {d['covariance']}; below 1 can be tighter classes or features that "
                                     "collapse as a whole: read it with within / total"
                                     + (f" ({d['within_total']})." if d.get("within_total") else ".")],
        [Strong("UD under a defense"), f": {d['defended_ud']}; on the same scale as UD, so above 1 where the "
                                       f"defense makes more layers sharp; read it against the clean control's ({control or 'none'}) "
                                       "UD under the same defense, the defense's own baseline."],
        [Strong("correlations"), f": {d['correlations']}."],
    ])
    return Section("Comparison with the literature", [
        Paragraph(["The three papers' measures for every poison of this run (dash: not measured in this run)."]),
        Table(header, rows), _correlations(comp), notes, *transfer])
