"""plan.md, plan.html and figures/ from plan.json's dict: a `certify.report.document` tree rendered by
the report's own Markdown and HTML renderers, and the accuracy-budget and certificate-budget curves
drawn like the report's figures."""
from __future__ import annotations

from pathlib import Path

from certify.files import atomic_write
from certify.report import figures as report_figures
from certify.report.document import Bullets, Code, Figure, Paragraph, Preformatted, Section, Strong, Table
from certify.report.html import render_html
from certify.report.markdown import render_markdown
from certify.report.text import DASH

NORM_NAMES = {"linf": "ℓ∞", "l2": "ℓ2"}


def _num(v, fmt: str = ".3f") -> str:
    return DASH if v is None else format(v, fmt)


def _x(doc: dict, row: dict) -> float:
    """A budget's position on the curves' axis: in 8-bit steps for l-inf, as given for l2."""
    return row["epsilon"] * 255 if doc["norm"] == "linf" else row["epsilon"]


def _recommendation(doc: dict) -> Paragraph:
    t = doc["targets"]
    what = ("the protected accuracy" if t.get("reading") == "undefended"
            else "the attacker's best accuracy over training normally and each defense")
    wanted = [f"{what} at most {t['protected_accuracy_at_most']:g} (the upper end of its 95 % interval)"] \
        if t["protected_accuracy_at_most"] is not None else []
    if t["certified_drop_at_least"] is not None:
        wanted.append(f"certified drop at least {t['certified_drop_at_least']:g}")
    if not wanted:
        return Paragraph([Strong("Recommendation"), ": none, no targets were given (", Code("--target-accuracy"),
                          ", ", Code("--target-drop"), ")."])
    if doc["recommended"] is None:
        return Paragraph([Strong("Recommendation"), f": no budget tried meets the targets ({' and '.join(wanted)})."])
    return Paragraph([Strong("Recommendation"), ": ", Code(doc["recommended"]),
                      f", the smallest budget tried with {' and '.join(wanted)}."])


def _seeds_note(doc: dict) -> str:
    k = len(doc.get("seeds", [doc["seed"]]))
    if k == 1:
        return ("Accuracies are one seed's, with the 95 % Clopper-Pearson interval over the test images (it does "
                "not show the spread between training runs: --seeds 3 does).")
    return (f"Accuracies are means over {k} seeds with 95 % Student-t intervals; each certificate is the largest "
            f"of the {k} seeds' bounds, each at α/{k}, so it holds for all of them at once.")


def _protected(row: dict) -> str:
    """The protected accuracy with its 95 % interval (plans before replicates have none)."""
    interval = row.get("protected_interval")
    return f"{row['protected_accuracy']:.3f}" + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def _attacker_best(row: dict) -> str:
    """The accuracy the default target reads (plans before it have none)."""
    best = row.get("attacker_best")
    return DASH if best is None else f"{best['accuracy']:.3f} ({best['by']})"


def _table(doc: dict) -> Table:
    at = f"η/σ={doc['certificate']['eta_over_sigma']:g}"
    measured = "measured ℓ∞ max (/255)" if doc["norm"] == "linf" else "measured ℓ2 max"
    header = ["budget", "ε", measured, "PSNR (dB)", "SSIM", "protected acc", "best defended acc",
              "attacker's best (upper end)", f"certified @ {at}", "certified drop"]
    if any(r["meets_targets"] is not None for r in doc["budgets"]):
        header.append("meets targets")
    rows = []
    for r in doc["budgets"]:
        m = r["measured"]["linf_max"] * 255 if doc["norm"] == "linf" else r["measured"]["l2_max"]
        defended = DASH if r["defended_accuracy"] is None else f"{r['defended_accuracy']:.3f} ({r['best_defense']})"
        same = f" (the release of {r['same_release_as']})" if r.get("same_release_as") else ""
        row = [r["budget"] + same, f"{r['epsilon']:.4g}", f"{m:.3g}", _num(r["psnr"], ".2f"), _num(r["ssim"]),
               _protected(r), defended, _attacker_best(r),
               "abstains" if r["certified"] is None else f"{r['certified']:.3f}", _num(r["certified_drop"], "+.3f")]
        if r["meets_targets"] is not None:
            row.append("yes" if r["meets_targets"] else "no")
        rows.append(row)
    return Table(header, rows)


def figure_specs(doc: dict) -> list[tuple[str, str]]:
    """(file name, caption) of every figure of the plan."""
    specs = [("accuracy-budget.png", f"{doc['poison']}: test accuracy of the protected model, without and "
              "with each defense, against the budget (grey: the clean model; dashed: the accuracy target)"),
             ("certificate-budget.png", f"{doc['poison']}: certified learnability at "
              f"η/σ = {doc['certificate']['eta_over_sigma']:g} against the budget (grey: the clean control; "
              "dashed: the level the drop target asks for; × an abstaining certificate)")]
    if doc["execution"]["tasks"]:
        specs.append(("timeline.png", "Where the time went: every task that ran, one row per task slot"))
    return specs


def build_document(doc: dict) -> Section:
    ds, cert, clean = doc["dataset"], doc["certificate"], doc["clean"]
    settings = Bullets([
        [Strong("Dataset"), ": ", Code(ds["name"]), f" — {ds['n_train']} training and {ds['n_test']} test images; "
         "model ", Code(doc["model"]["arch"]), f"; seed {doc['seed']}"],
        [Strong("Defenses"), ": " + ", ".join(doc["defenses"]) + " (best defended accuracy: the highest of them)"],
        [Strong("Certificate"), f": σ = {cert['sigma']:g}, q = {cert['q']:g}, α = {cert['alpha']:g}, "
         f"N = {cert['samples']} draws, quoted at η/σ = {cert['eta_over_sigma']:g} (η = {cert['eta']:.4g})"],
        [Strong("Clean control"), f": test accuracy {clean['accuracy']:.3f}, certified learnability "
         f"{'abstains' if clean['certified'] is None else format(clean['certified'], '.3f')}"],
    ])
    notes = Paragraph(["The certified drop is the clean control's certified learnability minus the poison's at the "
                       "same η/σ: positive means the poison lowers what any model near its surrogate can "
                       "certifiably learn. PSNR is that of the whole release against the clean images (its mean "
                       "squared error over every pixel); SSIM is the mean over images (scikit-image). "
                       f"{_seeds_note(doc)} Certified values are upper bounds (lower is better for the "
                       "data owner)."])
    figs = [Figure(name, caption) for name, caption in figure_specs(doc)]
    warnings = [Section("Warnings", [Bullets([[w] for w in doc["warnings"]])])] if doc["warnings"] else []
    return Section(f"Perturbation plan: {doc['poison']} on {ds['name']}", [
        Paragraph(["Command:"]), Preformatted(doc["command"]), settings, *warnings,
        Section("Budgets", [_table(doc), _recommendation(doc), notes]),
        Section("Curves", figs),
    ])


def _axis(ax, doc: dict) -> None:
    xs = [_x(doc, r) for r in doc["budgets"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [r["budget"] for r in doc["budgets"]])
    ax.minorticks_off()
    ax.set_xlabel(f"{NORM_NAMES[doc['norm']]} budget ε")
    if doc["recommended"] is not None:
        rec = next(r for r in doc["budgets"] if r["budget"] == doc["recommended"])
        ax.axvline(_x(doc, rec), color="k", ls=":", lw=1, label=f"recommended {rec['budget']}")


def _accuracy(doc: dict, fig) -> None:
    rf = report_figures
    ax = fig.add_subplot(1, 1, 1)
    xs = [_x(doc, r) for r in doc["budgets"]]
    ax.axhline(doc["clean"]["accuracy"], color=rf.CONTROL_COLOR, lw=2, label="clean model")
    ax.plot(xs, [r["protected_accuracy"] for r in doc["budgets"]], "o-", color=rf.POISON_COLOR, label="protected")
    for i, d in enumerate(doc["defenses"]):
        ax.plot(xs, [r["defenses"][d] for r in doc["budgets"]], "s--", ms=4,
                color=rf.METHOD_COLORS[i % len(rf.METHOD_COLORS)], label=rf._t(f"+ {d}"))
    target = doc["targets"]["protected_accuracy_at_most"]
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target ≤ {target:g}")
    _axis(ax, doc)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best")
    ax.set_title(rf._t(f"{doc['poison']}: accuracy against the budget"))


def _certificate(doc: dict, fig) -> None:
    from matplotlib.transforms import blended_transform_factory

    rf = report_figures
    ax = fig.add_subplot(1, 1, 1)
    rows, clean = doc["budgets"], doc["clean"]["certified"]
    xs = [_x(doc, r) for r in rows]
    if clean is not None:
        ax.axhline(clean, color=rf.CONTROL_COLOR, lw=2, label="clean control")
        gap = doc["targets"]["certified_drop_at_least"]
        if gap is not None:
            ax.axhline(clean - gap, color="k", ls="--", lw=1, label=f"drop target ≥ {gap:g}")
    ax.plot(xs, [rf._nan(r["certified"]) for r in rows], "o-", color=rf.POISON_COLOR, label="certified (upper)")
    abstain = [x for x, r in zip(xs, rows) if r["certified"] is None]
    if abstain:
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(abstain, [0.96] * len(abstain), "x", color=rf.POISON_COLOR, ms=8, mew=2, transform=tr,
                label="abstains")
    _axis(ax, doc)
    ax.set_ylabel(f"certified learnability (η/σ = {doc['certificate']['eta_over_sigma']:g})")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best")
    ax.set_title(rf._t(f"{doc['poison']}: certificate against the budget"))


def render_figures(doc: dict) -> dict[str, bytes]:
    """file name -> PNG bytes (deterministic: the report's rc settings and PNG writer)."""
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    rf = report_figures
    out = {}
    for name, caption in figure_specs(doc):
        if name == "timeline.png":  # the report's own timeline reads only execution.tasks
            out[name] = rf.render(doc, rf.FigureSpec(name, caption, None, "timeline"))
            continue
        with matplotlib.rc_context(rf._RC):
            fig = MplFigure(figsize=(7, 4.2), dpi=rf.DPI, layout="constrained")
            (_accuracy if name == "accuracy-budget.png" else _certificate)(doc, fig)
            out[name] = rf._finish_png(fig)
    return out


def write_plan(doc: dict, out: Path) -> None:
    """figures/*.png, plan.md and plan.html beside plan.json."""
    figs = render_figures(doc)
    for name, data in figs.items():
        atomic_write(out / "figures" / name, lambda tmp, d=data: Path(tmp).write_bytes(d))
    tree = build_document(doc)
    atomic_write(out / "plan.md", lambda tmp: Path(tmp).write_text(render_markdown(tree), encoding="utf-8"))
    atomic_write(out / "plan.html", lambda tmp: Path(tmp).write_text(render_html(tree, figs), encoding="utf-8"))
