"""Report figures (matplotlib, Agg), built from the report dict alone, except the sample grids.

`plan(report)` says which figures exist (a figure whose data is absent is skipped) without importing
matplotlib; `render(report, spec)` draws one as PNG bytes; `render_all(report)` draws them all.
The sample grid of a poison (`samples-<poison>.png`: training images clean, released and their
perturbation) needs pixels, which report.json does not hold: `sample_grid` draws it at run time
from the images `sample_indices` chooses, the report records those indices, and re-rendering keeps
the file (`RUN_TIME` kinds are planned and referenced, never redrawn).
Output is deterministic: fixed size and DPI, fixed rc settings, no Software/date metadata. Figures are
drawn on `matplotlib.figure.Figure` objects directly, so pyplot's global state and backend are untouched.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass

from certify.registry import CONTROL

DPI = 100
_RC = {
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "svg.hashsalt": "certify",
    "font.family": "DejaVu Sans", "text.usetex": False, "axes.grid": True, "grid.alpha": 0.3,
}
POISON_COLOR = "#c0392b"
CONTROL_COLOR = "#7f8c8d"
METHOD_COLORS = ["#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50"]
ABSTAIN_Y = 0.0  # where a certificate curve marks an η its bound abstains at (on the η axis)
UD_CAPTION = ("UD = #LP(model) / #LP(clean model), the paper's unlearnable distance, per poison: of the model "
              "trained normally on the release and, where measured, of the model trained under each defense, all "
              "against the undefended clean model's threshold β and #LP (dashed line: 1). 0: no layer of the "
              "model is sharper than β (truly unlearnable); 1: as many as the clean model's; above 1: more "
              "layers are sharp than the clean model's, the model keeps learning (often the wrong features; the "
              "paper reports TAP above 1 and defenses raising UD). Under a defense, read a poison's bar against "
              "the clean control's bar under the same defense, that defense's own baseline. With few scored "
              "layers UD moves in coarse steps. Every bar is labelled with its value; a UD of 0 is a stroke on the "
              "axis labelled 0 in its series' colour (n/a: not available).")
RUN_TIME = ("samples",)  # drawn from pixels while the run has them; kept by re-rendering
SAMPLES_PER_CLASS = 3
SAMPLE_CLASSES = 10  # a grid shows at most the first 10 classes


@dataclass(frozen=True)
class FigureSpec:
    filename: str
    caption: str
    poison: str | None  # None: one figure across poisons
    kind: str           # certificate | samples | history | per_class | sal | recovery | defenses | replicates | ud
                        # | victims | timeline


def slugs(names) -> dict[str, str]:
    """A safe, unique file-name part per poison name ('miue' stays 'miue')."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        s = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "poison"
        if s != name or s in used or s in ("defenses", "ud"):
            s = f"{s}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
        used.add(s)
        out[name] = s
    return out


def defense_names(report: dict) -> list[str]:
    """Every defense applied to any poison, in first-seen order (the report's columns, the figure's bars)."""
    names: list[str] = []
    for sec in report["poisons"].values():
        for d in (sec["empirical"].get("defenses") or {}):
            if d not in names:
                names.append(d)
    return names


def victim_names(report: dict) -> list[str]:
    """The victim panel's architectures, the crafting model first (the reference every other victim is
    read against, whether or not `--victims` named it), then the others in the user's order; [] for a
    run without a panel."""
    panel = report.get("victims")
    if not panel:
        return []
    crafting = panel["crafting_model"]
    return [crafting] + [a for a in panel["architectures"] if a != crafting]


def victim_of(report: dict, sec: dict, arch: str) -> dict | None:
    """A poison's accuracies on one victim architecture: its `victims` entry, or for the crafting model
    its `empirical` section (the same fields) where the panel does not name it; None if not measured."""
    own = (sec.get("victims") or {}).get(arch)
    if own is None and arch == report["victims"]["crafting_model"]:
        return sec["empirical"]
    return own


def replicated(report: dict) -> dict | None:
    """An empirical section with intervals (its `seeds` is K, its `confidence` the level: the same for
    every poison of a run), or None for a report from before replicate seeds."""
    return next((s["empirical"] for s in report["poisons"].values() if s["empirical"].get("protected_interval")),
                None)


def confidence(emp: dict) -> str:
    return f"{100 * emp['confidence']:g} %"


def _replicates_key(emp: dict) -> str:
    """What the replicates figure's points and bars are (its title, and its caption's end)."""
    if emp["seeds"] >= 2:
        return (f"each seed's accuracy (○), their mean and its {confidence(emp)} Student-t interval over the "
                f"{emp['seeds']} seeds (bar)")
    return f"the one seed's accuracy (○) and its {confidence(emp)} Clopper-Pearson interval over the test images (bar)"


def _has_matrix(m) -> bool:
    return isinstance(m, list) and any(isinstance(row, list) and len(row) > 0 for row in m)


def plan(report: dict) -> list[FigureSpec]:
    poisons = report["poisons"]
    slug = slugs(poisons)
    specs: list[FigureSpec] = []
    if any((s["empirical"].get("defenses") or {}) for s in poisons.values()):
        specs.append(FigureSpec("defenses.png", "Test accuracy of the protected model without and with each "
                                "defense (black tick: clean model)", None, "defenses"))
    emp = replicated(report)
    if emp is not None:
        specs.append(FigureSpec("replicates.png", "Test accuracy of the clean model, the protected model and the "
                                f"protected model under each defense, per poison: {_replicates_key(emp)}", None,
                                "replicates"))
    if report.get("victims"):
        specs.append(FigureSpec("victims.png", "Test accuracy of each victim architecture's protected model, per "
                                f"poison (bars; the crafting model {report['victims']['crafting_model']} first), "
                                "with its interval where the run has seeds (error bar), and the clean model of the "
                                "same architecture (black tick over each bar): transfer reads as a bar far below "
                                "its tick", None, "victims"))
    if any((s.get("sal_ud") or {}).get("ud") is not None for s in poisons.values()):
        specs.append(FigureSpec("ud.png", UD_CAPTION, None, "ud"))
    for name, sec in poisons.items():
        s = slug[name]
        if sec.get("samples"):
            specs.append(FigureSpec(f"samples-{s}.png", f"{name}: training images (a fixed seeded choice per "
                                    "class): clean, released, and the perturbation released − clean amplified per "
                                    "image to the full range (grey = 0; under it, its largest |δ| in 1/255)",
                                    name, "samples"))
        if sec.get("certificate"):
            twin = " and the clean control" if (name != CONTROL and (poisons.get(CONTROL) or {}).get("certificate")) \
                else ""
            specs.append(FigureSpec(f"certificate-{s}.png", f"{name}: certified learnability against η{twin} "
                                    "(left; × on the η axis, y = 0, marks an η where the bound abstains) and the accuracies of the smoothing draws "
                                    "(right)", name, "certificate"))
        emp = sec["empirical"]
        if emp.get("clean_history") or emp.get("protected_history"):
            specs.append(FigureSpec(f"history-{s}.png", f"{name}: test accuracy per epoch", name, "history"))
        if emp.get("per_class") and name != CONTROL:
            specs.append(FigureSpec(f"per-class-{s}.png", f"{name}: test accuracy per class of the clean and the "
                                    "protected model (a class at 0: a stroke on the axis, labelled 0)", name,
                                    "per_class"))
        sal = sec.get("sal_ud") or {}
        if _has_matrix(sal.get("sal_protected")) or _has_matrix(sal.get("sal_clean")):
            specs.append(FigureSpec(f"sal-{s}.png", f"{name}: SAL per layer and epoch, protected and clean",
                                    name, "sal"))
        if any(r["curve"] for r in (sec.get("recovery") or {}).values()):
            specs.append(FigureSpec(f"recovery-{s}.png", f"{name}: recovered accuracy against η beside the "
                                    "certified learnability", name, "recovery"))
    if (report.get("execution") or {}).get("tasks"):
        specs.append(FigureSpec("timeline.png", "Where the time went: every task that ran, one row per task "
                                "slot of each node, coloured by stage", None, "timeline"))
    return specs


# ----------------------------------------------------------------------------- drawing helpers

def _t(text) -> str:
    """Text safe for matplotlib: no mathtext from a '$' in a user string, no hidden '_' legend labels."""
    s = str(text).replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _secondary_eta_axis(ax, sigma: float) -> None:
    sec = ax.secondary_xaxis("top", functions=(lambda e: e / sigma, lambda r: r * sigma))
    sec.set_xlabel(f"η / σ  (σ = {sigma:g})")


def _plot_curve(ax, curve, color, label, lower=True, mark_size=8):
    """A certificate curve; each η where the bound abstains is a × on the η axis (y = 0, `ABSTAIN_Y`),
    in the curve's colour: the height of an abstention means nothing, so every curve marks it on one line."""
    xs = [p["eta"] for p in curve]
    ax.plot(xs, [_nan(p["learnability"]) for p in curve], "o-", color=color, label=f"{label}: certified upper")
    if lower and any(p["lower"] is not None for p in curve):
        ax.plot(xs, [_nan(p["lower"]) for p in curve], "v--", color=color, alpha=0.6, ms=4,
                label=f"{label}: certified lower")
    ab = [p["eta"] for p in curve if p["learnability"] is None]
    if ab:  # not clipped: half of each × lies below the axis
        ax.plot(ab, [ABSTAIN_Y] * len(ab), "x", color=color, ms=mark_size, mew=2, clip_on=False, zorder=4)
    return bool(ab)


def _abstain_legend(ax, shown: bool, loc: str) -> None:
    """The axes' legend, with one entry for every curve's abstention markers (they share one line)."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if shown:
        handles.append(Line2D([], [], ls="", marker="x", color="k", ms=7, mew=2))
        labels.append("abstains (× at y = 0, the curve's colour)")
    ax.legend(handles, labels, loc=loc)


def _legend_over_bars(ax, legend, margin: float = 0.04) -> None:
    """Raise the y-axis until every bar under `legend` (placed in a top corner of `ax`) ends below it:
    a tall bar of the draws' histogram would otherwise sit behind the legend. Measured on the laid-out
    figure; the axes' height, and so the legend's share of it, stays when the limits change."""
    fig = ax.figure
    fig.draw_without_rendering()
    box = legend.get_window_extent().transformed(ax.transAxes.inverted())
    (x0, _), (x1, _) = ax.transData.inverted().transform(legend.get_window_extent().get_points())
    lo, hi = ax.get_ylim()
    under = [p.get_y() + p.get_height() for p in ax.patches
             if p.get_x() < x1 and p.get_x() + p.get_width() > x0]
    room = box.y0 - margin  # the axes fraction a bar may reach
    if under and room > 0.2 and (max(under) - lo) / (hi - lo) > room:
        ax.set_ylim(lo, lo + (max(under) - lo) / room)


def _name_ticks(ax, names) -> None:
    """Poison names under their bars; many (or long) names are tilted and right-aligned to their tick,
    so neighbours do not overlap."""
    tilt = len(names) > 4 or sum(len(n) for n in names) > 40
    ax.set_xticklabels([_t(n) for n in names], rotation=30 if tilt else 0, ha="right" if tilt else "center",
                       rotation_mode="anchor" if tilt else "default")


def _finish_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _certificate(report, name, fig):
    poisons = report["poisons"]
    sec = poisons[name]
    cert = sec["certificate"]
    twin = (poisons.get(CONTROL) or {}).get("certificate") if name != CONTROL else None
    gs = fig.add_gridspec(1, 2, width_ratios=[3, 2])
    ax = fig.add_subplot(gs[0, 0])
    # the control's × is drawn larger, so the poison's on top of it leaves it visible
    abstains = twin is not None and _plot_curve(ax, twin["curve"], CONTROL_COLOR, CONTROL, mark_size=11)
    abstains = _plot_curve(ax, cert["curve"], POISON_COLOR, _t(name)) or abstains
    if cert["max_certified_eta"] is not None:
        ax.axvline(cert["max_certified_eta"], color="k", ls=":", lw=1,
                   label=f"max certified η = {cert['max_certified_eta']:.3g}")
    ax.set_xlabel("η (ℓ2 radius in parameter space)")
    ax.set_ylabel(f"test accuracy ({cert['q']:g}-quantile, smoothed)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    _secondary_eta_axis(ax, cert["sigma"])
    _abstain_legend(ax, abstains, "best")  # the curves sit anywhere between 0 and 1
    ax.set_title(_t(f"{name}: certified learnability (α = {cert['alpha']:g}, N = {cert['samples']}, "
                    f"{cert['coverage']})"))

    hx = fig.add_subplot(gs[0, 1])
    draws = cert["draws"]
    twin_draws = twin["draws"] if twin is not None else []
    allv = list(draws) + list(twin_draws)
    if allv:
        lo, hi = min(allv), max(allv)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.005, hi + 0.005
        bins = [lo + (hi - lo) * i / 30 for i in range(31)]
        if twin_draws:
            hx.hist(twin_draws, bins=bins, color=CONTROL_COLOR, alpha=0.55, label=f"{CONTROL} (N = {len(twin_draws)})")
        if draws:
            hx.hist(draws, bins=bins, color=POISON_COLOR, alpha=0.55, label=_t(f"{name} (N = {len(draws)})"))
        hx.axvline(cert["empirical_quantile"], color=POISON_COLOR, ls="--", lw=1,
                   label=f"empirical {cert['q']:g}-quantile")
        _legend_over_bars(hx, hx.legend(loc="upper left"))
    hx.set_xlabel("test accuracy of a smoothing draw")
    hx.set_ylabel("draws")
    hx.set_title("draw accuracies")


def _history(report, name, fig):
    emp = report["poisons"][name]["empirical"]
    ax = fig.add_subplot(1, 1, 1)
    for key, color, label in (("clean_history", CONTROL_COLOR, "clean model"),
                              ("protected_history", POISON_COLOR, "protected model")):
        h = emp.get(key) or []
        if h:
            ax.plot(range(1, len(h) + 1), h, "o-", ms=3, color=color, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title(_t(f"{name}: training history"))


def _per_class(report, name, fig):
    import numpy as np

    pc = report["poisons"][name]["empirical"]["per_class"]
    k = max(len(pc["clean"]), len(pc["protected"]))
    names = report["dataset"].get("class_names") or []
    names = names if len(names) == k else [str(i) for i in range(k)]
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axisbelow(True)
    x = np.arange(k)
    for j, (key, color, label) in enumerate((("clean", CONTROL_COLOR, "clean model"),
                                             ("protected", POISON_COLOR, "protected model"))):
        vals = [_nan(v) for v in pc[key]] + [math.nan] * (k - len(pc[key]))
        ax.bar(x - 0.2 + 0.4 * j, vals, 0.4, color=color, label=label)
        for px, v in zip(x - 0.2 + 0.4 * j, vals):  # a class at 0 draws no bar: say so
            if v == 0:
                _zero_mark(ax, px, 0.4, color, "0")
    tilt = k * max(len(n) for n in names) > 40  # long names side by side would overlap
    ax.set_xticks(x)
    ax.set_xticklabels([_t(n) for n in names], rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.18)  # the legend sits above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(loc="upper center", ncol=2)
    ax.set_title(_t(f"{name}: test accuracy per class"))


def sample_indices(y, classes: int, seed: int, per_class: int = SAMPLES_PER_CLASS) -> list[int]:
    """Training images for the sample grid: `per_class` of each of the first `SAMPLE_CLASSES`
    classes (all of a class that has fewer), a seeded choice, grouped by class in label order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    out: list[int] = []
    for c in range(min(classes, SAMPLE_CLASSES)):
        pool = np.flatnonzero(y == c)
        out += sorted(int(i) for i in rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return out


def _tile(a):
    """C×H×W in [0, 1] -> H×W×3 (a grayscale image repeated in each channel)."""
    import numpy as np

    a = np.clip(a, 0, 1).transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def sample_grid(clean, released, labels, classes: list[str], title: str) -> bytes:
    """PNG of the sample grid: one row per class, for each of its images the clean one, the released
    one and the perturbation released − clean scaled so that its largest |δ| spans the full range
    (grey = 0). `clean` and `released` are float N×C×H×W arrays in [0, 1] (the chosen images),
    `labels` theirs. One mosaic in one axes: a grid of 90 axes took seconds to lay out."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    clean, released, labels = np.asarray(clean, np.float64), np.asarray(released, np.float64), np.asarray(labels)
    delta = released - clean
    peak = np.abs(delta).reshape(len(delta), -1).max(axis=1) if len(delta) else np.zeros(0)
    shown = 0.5 + delta / (2 * np.where(peak > 0, peak, 1.0))[:, None, None, None]
    rows = list(dict.fromkeys(int(c) for c in labels))
    per_row = max([int((labels == c).sum()) for c in rows] or [1])
    h, w = clean.shape[2:] if clean.ndim == 4 else (1, 1)
    gap, band = max(1, round(0.12 * w)), max(2, round(0.4 * h))  # between tiles; under each row, for labels
    step = 3 * (w + gap) + 2 * gap  # one image's three tiles and the space after them
    width, height = per_row * step - gap, len(rows) * (h + band) + gap
    mosaic = np.ones((max(height, 1), max(width, 1), 3))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(0.95 * 3 * per_row + 1.2, 0.95 * 3 * per_row * height / max(width, 1) + 0.9),
                     dpi=DPI, layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        for r, c in enumerate(rows):
            top = gap + r * (h + band)
            for j, i in enumerate(np.flatnonzero(labels == c)):
                for k, img in enumerate((clean[i], released[i], shown[i])):
                    left = j * step + k * (w + gap)
                    mosaic[top:top + h, left:left + w] = _tile(img)
                ax.text(j * step + 2 * (w + gap) + w / 2 - 0.5, top + h + band / 2 - 0.5,
                        f"±{peak[i] * 255:.3g}/255", ha="center", va="center", fontsize=7)
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_yticks([gap + r * (h + band) + h / 2 - 0.5 for r in range(len(rows))])
        ax.set_yticklabels([_t(classes[c] if c < len(classes) else c) for c in rows])
        ax.set_xticks([j * step + k * (w + gap) + w / 2 - 0.5 for j in range(per_row) for k in range(3)])
        ax.set_xticklabels(["clean", "released", "perturbation"] * per_row, fontsize=7)
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(_t(title))
        return _finish_png(fig)


def _matrix(m):
    import numpy as np

    rows = [r if isinstance(r, list) else [] for r in m]
    width = max((len(r) for r in rows), default=0)
    a = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        a[i, : len(r)] = [_nan(v) for v in r]
    return np.ma.masked_invalid(a)


def _sal(report, name, fig):
    import numpy as np

    sal = report["poisons"][name]["sal_ud"]
    panels = [(k, t) for k, t in (("sal_protected", "protected"), ("sal_clean", "clean")) if _has_matrix(sal.get(k))]
    mats = [_matrix(sal[k]) for k, _ in panels]
    finite = [m.compressed() for m in mats if m.count()]
    vmin = float(min(f.min() for f in finite)) if finite else 0.0
    vmax = float(max(f.max() for f in finite)) if finite else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-9
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    im = None
    for ax, (key, title), m in zip(axes, panels, mats):
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax,
                       interpolation="nearest", extent=(0.5, m.shape[1] + 0.5, -0.5, m.shape[0] - 0.5))
        ax.set_xlabel("epoch")
        ax.set_ylabel("layer")
        ax.set_title(_t(f"SAL, {title} ({name})" if title == "protected" else "SAL, clean"))
        ax.grid(False)
        ax.set_yticks(np.arange(m.shape[0]))
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.9, label="SAL")


def _recovery(report, name, fig):
    poisons = report["poisons"]
    sec = poisons[name]
    ax = fig.add_subplot(1, 1, 1)
    cert = sec.get("certificate")
    twin = (poisons.get(CONTROL) or {}).get("certificate") if name != CONTROL else None
    abstains = twin is not None and _plot_curve(ax, twin["curve"], CONTROL_COLOR, CONTROL, lower=False,
                                                mark_size=11)
    if cert is not None:
        abstains = _plot_curve(ax, cert["curve"], POISON_COLOR, _t(name), lower=False) or abstains
    for i, (method, rec) in enumerate(sec["recovery"].items()):
        c = rec["curve"]
        ax.plot([p["eta"] for p in c], [p["accuracy"] for p in c], "s-", ms=4,
                color=METHOD_COLORS[i % len(METHOD_COLORS)], label=_t(f"recovered ({method})"))
    ax.axhline(sec["empirical"]["protected_accuracy"], color=POISON_COLOR, ls=":", lw=1,
               label="protected model accuracy")
    ax.set_xlabel("η (ℓ2 radius in parameter space)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    sigma = cert["sigma"] if cert else None
    if sigma is None:
        pts = [p for r in sec["recovery"].values() for p in r["curve"] if p["eta_over_sigma"] > 0]
        sigma = pts[0]["eta"] / pts[0]["eta_over_sigma"] if pts else None
    if sigma:
        _secondary_eta_axis(ax, sigma)
    _abstain_legend(ax, abstains, "best")
    ax.set_title(_t(f"{name}: recovery attack"))


def _defenses(report, fig):
    import numpy as np

    poisons = report["poisons"]
    names = list(poisons)
    series = ["no defense"] + defense_names(report)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axisbelow(True)
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for j, label in enumerate(series):
        vals = []
        for n in names:
            emp = poisons[n]["empirical"]
            if j == 0:
                vals.append(emp["protected_accuracy"])
            else:
                vals.append(_nan(((emp.get("defenses") or {}).get(label) or {}).get("accuracy")))
        ax.bar(x - 0.4 + width * (j + 0.5), vals, width, label=_t(label),
               color=([CONTROL_COLOR] + METHOD_COLORS)[j % (len(METHOD_COLORS) + 1)])
    for i, n in enumerate(names):
        ax.hlines(poisons[n]["empirical"]["clean_accuracy"], i - 0.42, i + 0.42, color="k", lw=2)
    ax.set_xticks(x)
    _name_ticks(ax, names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("defenses")
    fig.legend(ncol=min(len(series), 5), loc="outside upper center")  # above the axes: it covers no bar


def _victims(report, fig):
    import numpy as np
    from matplotlib.lines import Line2D

    poisons = report["poisons"]
    names = list(poisons)
    archs = victim_names(report)
    crafting = report["victims"]["crafting_model"]
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axisbelow(True)
    width = 0.8 / len(archs)
    for j, arch in enumerate(archs):
        pos = np.arange(len(names)) - 0.4 + width * (j + 0.5)
        got = [victim_of(report, poisons[n], arch) or {} for n in names]
        vals = [_nan(v.get("protected_accuracy")) for v in got]
        # an interval's two sides; none (a report without seeds, an absent victim) draws no error bar
        sides = [(m - v["protected_interval"][0], v["protected_interval"][1] - m) if v.get("protected_interval")
                 else (0.0, 0.0) for m, v in zip(vals, got)]
        ax.bar(pos, vals, width, yerr=np.array(sides).T, capsize=2, error_kw={"lw": 1},
               color=METHOD_COLORS[j % len(METHOD_COLORS)],
               label=_t(f"{arch} (crafting)" if arch == crafting else arch))
        ax.hlines([_nan(v.get("clean_accuracy")) for v in got], pos - width / 2, pos + width / 2, color="k", lw=2)
    ax.set_xticks(np.arange(len(names)))
    _name_ticks(ax, names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("protected accuracy per victim architecture")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", lw=2))
    labels.append("its clean model")
    fig.legend(handles, labels, ncol=min(len(labels), 5), loc="outside upper center")  # above: it covers no bar


def _measures(report) -> list:
    """What the replicates figure shows of each poison, as (label, colour, sec -> (each seed's value,
    mean, [low, high]), or None where it was not measured): clean, undefended, under each defense."""
    def own(key):
        def get(sec):  # a mean without its interval (a hand-made report) is drawn as a point
            emp = sec["empirical"]
            mean = emp[f"{key}_accuracy"]
            return ([r[f"{key}_accuracy"] for r in sec.get("replicates") or []], mean,
                    emp.get(f"{key}_interval") or [mean, mean])

        return get

    def defended(d):
        def get(sec):
            v = (sec["empirical"].get("defenses") or {}).get(d)
            if v is None:
                return None
            seeds = [r["defenses"][d] for r in sec.get("replicates") or [] if d in r["defenses"]]
            return seeds, v["accuracy"], v["interval"]
        return get

    return [("clean model", "k", own("clean")), ("protected", POISON_COLOR, own("protected"))] + [
        (f"under {d}", METHOD_COLORS[i % len(METHOD_COLORS)], defended(d)) for i, d in enumerate(defense_names(report))]


def _replicates(report, fig):
    import numpy as np

    poisons = {n: s for n, s in report["poisons"].items() if s["empirical"].get("protected_interval")}
    measures = _measures(report)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(measures)
    for i, sec in enumerate(poisons.values()):
        for j, (label, color, get) in enumerate(measures):
            m = get(sec)
            if m is None:
                continue
            seeds, mean, (low, high) = m
            x = i - 0.4 + width * (j + 0.5)
            # the seeds spread across the slot, the mean's bar at its centre
            xs = x + width * 0.3 * (np.linspace(-1, 1, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds)))
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="_", ms=width * 40, mew=2, capsize=3,
                        color=color, label=_t(label) if i == 0 else None, zorder=2)
            ax.plot(xs, seeds, "o", ms=4.5, mfc="none", mec=color, mew=1.2, zorder=3)  # hollow: the bar shows
    for i in range(1, len(poisons)):  # the groups' bounds; ticks are the groups' centres
        ax.axvline(i - 0.5, color="0.8", lw=0.8)
    ax.xaxis.grid(False)
    ax.set_xticks(range(len(poisons)))
    ax.set_xticklabels([_t(n) for n in poisons], rotation=20 if len(poisons) > 4 else 0)
    ax.set_xlim(-0.5, len(poisons) - 0.5)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    fig.legend(loc="outside upper center", ncol=min(len(measures), 5))  # above the axes: it covers no point
    ax.set_title(_replicates_key(replicated(report)))


def ud_series(report: dict) -> list[tuple[str, list[str], list[float]]]:
    """(label, poisons, UD of each, NaN where not available) per bar series of the UD figure: the
    undefended models, then the model trained under each defense whose UD was measured."""
    poisons = {n: s["sal_ud"] for n, s in report["poisons"].items() if s.get("sal_ud")}
    names = list(poisons)
    out = [("no defense", names, [_nan(poisons[n]["ud"]) for n in names])]
    for d in dict.fromkeys(d for s in poisons.values() for d in (s.get("defended") or {})):
        out.append((f"under {d}", names, [_nan(((poisons[n].get("defended") or {}).get(d) or {}).get("ud"))
                                          for n in names]))
    return out


def _zero_mark(ax, px: float, width: float, color, text: str, rotation: int = 0, line: bool = True) -> None:
    """A bar of height 0 (or not available) draws nothing: a stroke on the axis in the bar's colour
    (`line`) and its value, bold and in that colour, just above it, so that it reads as a bar at 0."""
    if line:
        ax.hlines(0, px - width * 0.45, px + width * 0.45, color=color, lw=3, clip_on=False, zorder=3)
    ax.annotate(text, (px, 0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                rotation=rotation, fontsize=7, fontweight="bold", color=color)


def _ud_label(v: float) -> str:
    return "n/a" if v != v else f"{v:.3g}"


def _ud(report, fig):
    import numpy as np

    series = ud_series(report)
    names = series[0][1]
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axisbelow(True)
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for j, (label, _, vals) in enumerate(series):
        pos = x - 0.4 + width * (j + 0.5)
        # alone, the undefended bars tell the control (grey) from the poisons (red); beside defended
        # series they are one series, grey, as "no defense" is in the defenses chart and in the legend
        colors = ([CONTROL_COLOR if n == CONTROL else POISON_COLOR for n in names] if len(series) == 1
                  else [([CONTROL_COLOR] + METHOD_COLORS)[j % (len(METHOD_COLORS) + 1)]] * len(names))
        ax.bar(pos, vals, width, color=colors, label=_t(label) if len(series) > 1 else None)
        for px, v, c in zip(pos, vals, colors):  # every bar its value; a UD of 0 (or n/a) draws no bar
            if v == 0 or v != v:
                _zero_mark(ax, px, width, c, _ud_label(v), rotation=90 if len(series) > 1 else 0, line=v == 0)
            else:
                ax.text(px, v, _ud_label(v), ha="center", va="bottom", rotation=90 if len(series) > 1 else 0,
                        fontsize=7)
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="1 = the clean model")
    ax.set_xticks(x)
    _name_ticks(ax, names)
    top = max([v for _, _, vals in series for v in vals if v == v] + [1.0])
    ax.set_ylim(0, top * 1.25)  # room for the labels over the tallest bar
    ax.set_ylabel("UD = #LP(model) / #LP(clean model)")
    ax.set_title("UD per poison")
    fig.legend(ncol=min(len(series) + 1, 5), loc="outside upper center")


def lanes(tasks: list[dict]) -> list[tuple[str, int]]:
    """(node, slot) for each task: per node, the first slot free at its start (greedy interval
    packing), so tasks drawn on one row never overlap and parallel tasks show as parallel rows."""
    free: dict[str, list[float]] = {}
    out = []
    for t in sorted(range(len(tasks)), key=lambda i: (tasks[i]["start"], tasks[i]["end"])):
        ends = free.setdefault(tasks[t]["node"], [])
        slot = next((k for k, end in enumerate(ends) if end <= tasks[t]["start"] + 1e-9), len(ends))
        if slot == len(ends):
            ends.append(0.0)
        ends[slot] = tasks[t]["end"]
        out.append((t, (tasks[t]["node"], slot)))
    return [lane for _, lane in sorted(out)]


def _timeline(report, fig):
    from matplotlib.patches import Patch

    tasks = report["execution"]["tasks"]
    where = lanes(tasks)
    rows = sorted(set(where), key=lambda r: (r[0] != "driver", r[0], r[1]))
    stages = list(dict.fromkeys(t["stage"] for t in tasks))
    colors = {st: METHOD_COLORS[i % len(METHOD_COLORS)] if i < len(METHOD_COLORS) else f"C{i % 10}"
              for i, st in enumerate(stages)}
    ax = fig.add_subplot(1, 1, 1)
    for t, lane in zip(tasks, where):
        ax.barh(rows.index(lane), max(t["end"] - t["start"], 0.05), left=t["start"], height=0.8,
                color=colors[t["stage"]], edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{node[:8]} #{slot}" for node, slot in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the run's start")
    ax.legend(handles=[Patch(color=colors[st], label=_t(st)) for st in stages], ncol=min(len(stages), 5),
              loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8)
    ax.set_title(f"{len(tasks)} tasks on {len({n for n, _ in rows})} node(s)")


_SIZES = {"certificate": (11, 4.4), "history": (6, 3.6), "per_class": (7, 3.8), "sal": (11, 4),
          "recovery": (7.5, 4.6), "defenses": (8, 4.4), "replicates": (9, 4.4), "ud": (8, 4.2),
          "victims": (9, 4.4), "timeline": (10, 4.2)}


def draw(report: dict, spec: FigureSpec):
    """One figure as a matplotlib Figure (laid out, not saved); call it inside `matplotlib.rc_context(_RC)`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZES[spec.kind], dpi=DPI, layout="constrained")
    if spec.poison is None:
        {"defenses": _defenses, "replicates": _replicates, "ud": _ud, "victims": _victims,
         "timeline": _timeline}[spec.kind](report, fig)
    else:
        {"certificate": _certificate, "history": _history, "per_class": _per_class, "sal": _sal,
         "recovery": _recovery}[spec.kind](report, spec.poison, fig)
    return fig


def render(report: dict, spec: FigureSpec) -> bytes:
    """One figure as PNG bytes."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        return _finish_png(draw(report, spec))


def render_all(report: dict) -> dict[str, bytes]:
    """filename -> PNG bytes for every figure whose data is present, in plan order (the run-time
    sample grids excepted: they are not drawn from the report)."""
    return {spec.filename: render(report, spec) for spec in plan(report) if spec.kind not in RUN_TIME}
