"""What the report says, from the (validated) report dict alone: `build_document(report)`.

Everything the text shows is decided here: which poisons and columns, the derived numbers (gaps to
the clean control, ratios, the best recovery), which η points the summary quotes, the warnings and
the figures. The result is a format-free `certify.report.document.Section`; `markdown` and `html`
only render it, so the two documents always say the same thing.
"""
from __future__ import annotations

import json

from certify.curves import close, early_stop, point_at, reference_point
from certify.plugins import BUILT_IN
from certify.registry import CONTROL
from certify.report import figures
from certify.report.document import Bullets, Code, Figure, Paragraph, Preformatted, Section, Strong, Table
from certify.report.literature import comparison_section
from certify.report.text import DASH, acc, num, ratio, signed

PREFERRED_GRID = (0.1, 0.5)
TRAIN_FIT = ("on its own un-augmented training images; a victim far below 1 underfits, and a shortcut it cannot "
             "fit reads as protection")
VICTIMS_TRAINING = "Victims and their training"


# ----------------------------------------------------------------------------- numbers and lookups

# An accuracy with its 95 % interval (report.json's `*_interval` fields, from replicate seeds): a
# Student-t interval over K >= 2 seeds is centred on the mean, so it reads as "mean ± half-width";
# a Clopper-Pearson interval (one seed, over the test images) is not, so it is written out. Reports
# from before replicates have no interval, and show the bare accuracy as they always did.

def _bounds(interval) -> str:
    return f"[{acc(interval[0])}, {acc(interval[1])}]"


def _half_width(emp: dict, value: float, interval) -> str | None:
    """The ± part where it is honest: a Student-t interval whose two halves print alike (clipping at
    0 or 1 makes them differ)."""
    h = acc(interval[1] - value)
    return h if emp.get("interval_method") == "student-t" and acc(value - interval[0]) == h else None


def spread(emp: dict, value, interval) -> str | None:
    """A table cell: '0.239 ± 0.031', or '0.213 [0.188, 0.240]' for an interval not centred on it."""
    if value is None or interval is None:
        return acc(value)
    h = _half_width(emp, value, interval)
    return f"{acc(value)} ± {h}" if h else f"{acc(value)} {_bounds(interval)}"


def measured(emp: dict, key: str) -> str:
    """`spread` of the empirical section's own accuracies: key 'clean', 'protected' or 'peak_protected'."""
    return spread(emp, emp[f"{key}_accuracy"], emp.get(f"{key}_interval"))


def described(emp: dict, key: str, n_test: int) -> str:
    """The sentence form of `measured`: which interval, at what confidence, over how many seeds."""
    value, interval = emp[f"{key}_accuracy"], emp.get(f"{key}_interval")
    if interval is None:
        return acc(value)
    level = figures.confidence(emp)
    if emp["interval_method"] == "student-t":
        h = _half_width(emp, value, interval)
        return (f"{acc(value)}{f' ± {h}' if h else ''} ({level} Student-t interval over {emp['seeds']} seeds, "
                f"{_bounds(interval)})")
    return (f"{acc(value)} ({level} Clopper-Pearson interval over the {n_test} test images: {_bounds(interval)}; "
            "one seed)")


def curve_of(section: dict | None) -> list:
    cert = (section or {}).get("certificate")
    return cert["curve"] if cert else []


def summary_grid(report: dict) -> list[float]:
    """η/σ = 0.1 and 0.5 where the grid has them, else (filling up to two) the first grid points."""
    values: list[float] = []
    for sec in report["poisons"].values():
        for pt in curve_of(sec):
            if not any(close(pt["eta_over_sigma"], v) for v in values):
                values.append(pt["eta_over_sigma"])
    values.sort()
    picks = [v for v in values if any(close(v, p) for p in PREFERRED_GRID)]
    for v in values:
        if len(picks) >= 2:
            break
        if v not in picks:
            picks.append(v)
    return sorted(picks)


def best_recovery(section: dict) -> tuple[float, str, float] | None:
    """(test accuracy, method, η/σ) of the recovery attack the attacker does best with, each at the
    point it early-stops on (the verdict's reading, certify.recovery.early_stop)."""
    best = None
    for method, rec in (section.get("recovery") or {}).items():
        pt = rec.get("chosen") or early_stop(rec["curve"])
        if pt is not None and (best is None or pt["accuracy"] > best[0]):
            best = (pt["accuracy"], method, pt["eta_over_sigma"])
    return best


def poison_title(name: str) -> str:
    return f"{CONTROL} (clean control)" if name == CONTROL else name


# ----------------------------------------------------------------------------- sections

def _summary(report: dict) -> Section:
    poisons = report["poisons"]
    control = poisons.get(CONTROL)
    grid = summary_grid(report)

    def certified(name, sec, r):
        cert = sec.get("certificate")
        pt = point_at(cert["curve"], r) if cert else None
        if pt is None:
            return None
        if pt["learnability"] is None:
            return "abstains"
        text = acc(pt["learnability"])
        if name != CONTROL and control is not None:
            cp = point_at(curve_of(control), r)
            if cp is not None and cp["learnability"] is not None:
                text += f" (drop {signed(cp['learnability'] - pt['learnability'])})"
            elif cp is not None:
                text += " (none abstains)"
        return text

    def max_eta(name, sec):
        cert = sec.get("certificate")
        if not cert:
            return None
        m = cert["max_certified_eta"]
        return "none certified" if m is None else f"{m:.4g} ({m / cert['sigma']:.3g}σ)"

    def ud(name, sec):
        s = sec.get("sal_ud")
        if not s:
            return None
        return "n/a" if s["ud"] is None else f"{s['ud']:.3f}"

    def mi_gap(name, sec):
        m = sec.get("mutual_information")
        return None if not m else num(m["gap"], 3)

    def recovered(name, sec):
        b = best_recovery(sec)
        if b is None:
            return None
        rec, emp = sec["recovery"], sec["empirical"]
        if emp.get("seeds", 1) >= 2:  # each seed's best lies at its own η, so their mean names none
            m = max(rec, key=lambda m: rec[m]["best_accuracy"])
            return f"{spread(emp, rec[m]['best_accuracy'], rec[m]['best_interval'])} ({m})"
        return f"{spread(emp, b[0], rec[b[1]].get('best_interval'))} ({b[1]}, η/σ={b[2]:g})"

    def defended(emp, d):
        v = (emp.get("defenses") or {}).get(d) or {}
        return spread(emp, v.get("accuracy"), v.get("interval"))

    columns = [
        ("clean acc", lambda n, s: measured(s["empirical"], "clean")),
        ("protected acc", lambda n, s: measured(s["empirical"], "protected")),
        ("peak protected acc", lambda n, s: measured(s["empirical"], "peak_protected")),
    ]
    for d in figures.defense_names(report):
        columns.append((f"{d} acc", lambda n, s, d=d: defended(s["empirical"], d)))
    gap_note = f" (drop below {CONTROL})" if control is not None else ""
    for r in grid:
        columns.append((f"certified @ η/σ={r:g}{gap_note}", lambda n, s, r=r: certified(n, s, r)))
    columns += [("max certified η", max_eta), ("UD", ud), ("MI gap", mi_gap), ("best recovered acc", recovered)]

    cells = {title: [fn(n, s) for n, s in poisons.items()] for title, fn in columns}
    kept = [title for title, _ in columns if any(c is not None for c in cells[title])]
    headers = ["poison"] + kept
    rows = [[name] + [cells[t][i] if cells[t][i] is not None else DASH for t in kept]
            for i, name in enumerate(poisons)]
    if not poisons:
        return Section("Summary", [Paragraph(["The report holds no poisons."])])
    notes = ["Accuracies are fractions of the test set. " + _interval_note(report) +
             "Certified values are upper bounds on the smoothed q-quantile of test accuracy of any model within η "
             "of the surrogate θ̂ (lower is better for the data owner)"]
    if control is not None and grid:
        notes.append("; the drop is the clean control's bound minus this poison's at the same η/σ "
                     "(positive: the poison lowers what can be learned, as the accuracy drop is clean minus protected)")
    notes.append(". \"abstains\" means no bound can be given at that η with this number of draws.")
    return Section("Summary", [Table(headers, rows), Paragraph(["".join(notes)])])


def _interval_note(report: dict) -> str:
    """What the accuracy cells' intervals are ('' for a report from before replicates)."""
    emp = figures.replicated(report)
    if emp is None:
        return ""
    level = figures.confidence(emp)
    if emp["interval_method"] == "student-t":
        return (f"Each is the mean over {emp['seeds']} seeds ± the half-width of its {level} Student-t interval "
                "(the interval itself where clipping at 0 or 1 makes it uneven); the best recovered accuracy is the "
                "mean of each seed's best. ")
    return (f"Each is one seed's, with its {level} Clopper-Pearson interval over the {report['dataset']['n_test']} "
            "test images in brackets. ")


def _verdict(report: dict) -> Section | None:
    """One line per poison: its level and the measured reasons (reports before verdicts have none)."""
    lines = [[Strong(f"{poison_title(name)}: {sec['verdict']['level']}"), " — " + "; ".join(sec["verdict"]["reasons"])]
             for name, sec in report["poisons"].items() if sec.get("verdict")]
    if not lines:
        return None
    children: list = [Bullets(lines)]
    emp = figures.replicated(report)
    k = emp["seeds"] if emp else 1
    if emp:
        over = f"over {k} seeds" if k >= 2 else "on one seed"
        children.insert(0, Paragraph([f"Judged {over}, on the upper end of the {figures.confidence(emp)} interval "
                                      "of the attacker's best accuracy."]))
    t = (report.get("config") or {}).get("verdict")
    if isinstance(t, dict) and all(isinstance(t.get(k), (int, float)) for k in
                                   ("strong", "partial", "weak", "eta_over_sigma", "certified_gap")):
        children.append(Paragraph([
            "The level comes from the attacker's best: the test accuracy reached undefended, under each defense, "
            "or by a recovery attack early-stopped on the attacker's own clean images"
            f"{', read at the upper end of its interval,' if emp else ''} as a fraction of what clean data gives "
            "the same way (a defense's against the clean control trained under that defense): strong at most "
            f"{t['strong']:g}, partial at most {t['partial']:g}, weak at most {t['weak']:g}, none above. Strong "
            "also needs the minimum attacker suite to have run (JPEG-10, JPEG-50, grayscale and a recovery attack; "
            f"otherwise partial at most) and the certified learnability at η/σ = {t['eta_over_sigma']:g} to lie at "
            f"least {t['certified_gap']:g} below the clean control's, where both were certified (otherwise "
            "partial). Thresholds: ", Code("verdict.*"), " in the configuration."]))
    return Section("Verdict" + (f" (over {k} seeds)" if k >= 2 else ""), children)


def _header(report: dict) -> list:
    env, ds, model = report["environment"], report["dataset"], report["model"]
    env_text = ", ".join(f"{k} {v}" for k, v in env.items() if not isinstance(v, (dict, list)))
    return [Paragraph(["Command:"]), Preformatted(report["command"]), Bullets([
        [Strong("Seed"), f": {report['seed']}"],
        [Strong("Created"), f": {report['created']}"],
        [Strong("Schema"), f": {report['schema']}"],
        [Strong("Environment"), f": {env_text}"],
        [Strong("Dataset"), ": ", Code(str(ds["name"])),
         f" — {ds['n_train']} training and {ds['n_test']} test images"
         + (f" (test set: {ds['test_source']})" if ds.get("test_source") else "") + ", shape "
         f"{'×'.join(str(s) for s in ds['shape'])}, {ds['classes']} classes"
         + (f"; every image resized to {ds['resized_to']}×{ds['resized_to']} (shorter side, then a centre crop)"
            if ds.get("resized_to") else "")],
        [Strong("Model"), ": ", Code(str(model["arch"])), f" — {model['parameters']:,} parameters"],
    ])]


def _certificate_table(name: str, sec: dict, control: dict | None) -> Table:
    cert = sec["certificate"]
    twin = control.get("certificate") if (control is not None and name != CONTROL) else None
    headers = ["η", "η/σ", "q̄", f"certified upper ({name})"]
    if twin is not None:
        headers += [f"certified upper ({CONTROL})", "drop"]
    headers += ["lower bound"]
    rows = []
    for pt in cert["curve"]:
        up = pt["learnability"]
        row = [f"{pt['eta']:.4g}", f"{pt['eta_over_sigma']:g}", f"{pt['q_bar']:.4f}",
               "abstains" if up is None else acc(up)]
        if twin is not None:
            cp = point_at(twin["curve"], pt["eta_over_sigma"])
            cu = None if cp is None else cp["learnability"]
            row.append(DASH if cp is None else ("abstains" if cu is None else acc(cu)))
            row.append(signed(cu - up) if (up is not None and cu is not None) else DASH)
        row.append("abstains" if pt["lower"] is None else acc(pt["lower"]))
        rows.append(row)
    return Table(headers, rows)


def _replicate_level(cert: dict) -> str:
    k = cert.get("replicates", 1)
    return f"; {k} replicates, each bound at α/{k} = {cert['replicate_alpha']:.3g}" if k >= 2 else ""


def _certificate_params(cert: dict) -> Bullets:
    sigma = cert["sigma"]
    rule = cert["sigma_rule"]
    tried = ", ".join(f"σ={t['sigma']:g} → median ratio {num(t['median_ratio'], 3)}" for t in rule["tried"])
    rule_text = f"σ = {sigma:g} ({rule['rule']}" + (f"; tried {tried}" if tried else "") + ")"
    recipe = cert["surrogate_recipe"]
    items = [
        [Strong("Smoothing"), f": {rule_text}"],
    ]
    if rule.get("warning"):
        items.append([Strong("σ rule warning"), f": {rule['warning']}"])
    items += [
        [Strong("Confidence"), f": q = {cert['q']:g}, α = {cert['alpha']:g}, N = {cert['samples']} draws, "
                               f"coverage {cert['coverage']}" + _replicate_level(cert)],
        [Strong("Surrogate θ̂"), f": {cert['surrogate']}, noise levels "
                                f"[{', '.join(f'{v:g}' for v in recipe['levels'])}], {recipe['epochs']} epochs"
                                f"{' fine-tuning the normally trained model' if recipe.get('init') == 'victim' else ''}; "
                                f"unperturbed test accuracy {acc(cert['surrogate_accuracy'])}"],
        [Strong("Empirical q-quantile of the draws"), f" (not certified): {acc(cert['empirical_quantile'])}"],
    ]
    m = cert["max_certified_eta"]
    items.append([Strong("Largest certified η"),
                  ": none (every η abstains)" if m is None else f": {m:.4g} (η/σ = {m / sigma:.3g})"])
    if cert.get("theta_norm") is not None:
        items.append([Strong("‖θ̂‖₂"), f": {cert['theta_norm']:.4g}"])
    if cert.get("independent_distance") is not None:
        items.append([Strong("Distance between two independently trained clean models"),
                      f": {cert['independent_distance']:.4g}"])
    if cert.get("independent_models"):
        v = cert["independent_models"]
        items.append([Strong("Independently trained victims within the largest certified η"),
                      f": {v['within']} of {v['k']} (ℓ2 distances to θ̂: {', '.join(f'{d:.4g}' for d in v['distances'])})"])
    if cert.get("eta_scale") is not None:
        note = cert["eta_scale"]
        items.append([Strong("η scale"), ": " + (note if isinstance(note, str) else json.dumps(note, sort_keys=True))])
    return Bullets(items)


def _union(cert: dict) -> str:
    """With K >= 2 seeds, what the summary's certified value means (the union bound over the seeds)."""
    k = cert["replicates"]
    return (f" The run has {k} seeds, each with its own surrogate θ̂ and its own draws: each seed's bound was "
            f"computed at level α/{k} = {cert['replicate_alpha']:.3g}, and the certified value shown is the largest "
            f"of the {k} (the lower bound the smallest; an η abstains where any seed abstains). So, by the union "
            f"bound, with probability at least {1 - cert['alpha']:g} all {k} bounds hold at once, and the value shown "
            f"holds around every one of the {k} surrogates together.")


def _sigmas(sec: dict) -> str:
    """Where the σ rule picked different σ for different seeds (it is seeded too): what η means then."""
    sigmas = [r["sigma"] for r in sec.get("replicates") or [] if "sigma" in r]
    if len(set(sigmas)) <= 1:
        return ""
    return (f" The σ rule picked σ = {', '.join(f'{v:g}' for v in sigmas)} for the seeds (in seed order): each "
            f"seed's bound holds within η = (η/σ)·σ of its own surrogate; the η column is the first seed's "
            f"(σ = {sigmas[0]:g}).")


def _victims_covered(cert: dict, data: str, seeds: int) -> str:
    """How many of the K independently trained victims the certificate covers ('' where none were trained)."""
    v = cert.get("independent_models")
    if not v:
        return ""
    d = v["distances"]
    eta = v["max_certified_eta"]
    radius = "no η is certified" if eta is None else f"the largest certified η is {eta:.4g}"
    first = " (measured for the first seed's surrogate only)" if seeds > 1 else ""
    text = (f" The certificate covers {v['within']} of {v['k']} victims trained independently on the {data} data "
            f"with the normal recipe{first}: their ℓ2 distances to θ̂ are {min(d):.4g} to {max(d):.4g}, and "
            f"{radius}.")
    if v["within"] < v["k"]:
        text += " A model someone trains on these data need not lie in the certified ball, and then nothing is certified about it."
    return text


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _other_victims(report: dict) -> str:
    """The victim architectures besides the crafting model, which the certificate does not reach ('' without)."""
    crafting, *others = figures.victim_names(report) or [None]
    if not others:
        return ""
    return (f" It bounds the surrogate of the crafting model, {crafting} (its architecture), not the other victims "
            f"{_and(others)}, whose protection is measured only empirically (their rows in the Victims table above).")


def _guarantee(name: str, sec: dict, report: dict) -> list[Paragraph]:
    cert = sec["certificate"]
    control = report["poisons"].get(CONTROL)
    sigma, q, alpha, n = cert["sigma"], cert["q"], cert["alpha"], cert["samples"]
    curve = cert["curve"]
    g = len(curve)
    ds = report["dataset"]
    data = "clean" if name == CONTROL else "protected (released)"
    k = cert.get("replicates", 1)
    share = f"α/{g}" if k == 1 else f"α/({k}·{g})"  # with seeds, the level of each seed's row
    if cert["coverage"] == "bonferroni":
        coverage = (f"for all {g} values of η in the table at once (Bonferroni coverage: each row was certified "
                    f"at {share} = {alpha / (k * max(g, 1)):.3g})")
    else:
        coverage = (f"separately for each η in the table (per-η coverage: each row holds on its own at this level; "
                    f"a claim about all {g} rows at once would need {share} per row, Bonferroni coverage)")
    around = (f"θ̂ — the {cert['surrogate']} surrogate trained on the {data} data —" if k == 1 else
              f"any one of the {k} surrogates θ̂ — the {cert['surrogate']} surrogates trained on the {data} data, one "
              "per seed —")
    per_seed = " of each seed" if k > 1 else ""
    text = (f"With probability at least {1 - alpha:g} over the {n} random weight draws{per_seed}, {coverage}: take "
            f"any model θ′ whose parameters lie within ℓ2 distance η of {around} and add Gaussian noise of standard "
            f"deviation σ = {sigma:g} to every trainable parameter; the {q:g}-quantile of its accuracy on the fixed "
            f"test set ({ds['n_test']} images of {ds.get('test_source', ds['name'])}) is at most that row's certified "
            "upper value.")
    if k > 1:
        text += _union(cert) + _sigmas(sec)
    certified = [pt for pt in curve if pt["learnability"] is not None]
    if certified:
        pt = certified[0]
        text += (f" For instance, at η = {pt['eta']:.4g} (η/σ = {pt['eta_over_sigma']:g}) it is at most "
                 f"{pt['learnability']:.3f}")
        cp = point_at(curve_of(control), pt["eta_over_sigma"]) if name != CONTROL else None
        if cp is not None and cp["learnability"] is not None:
            text += (f", against {cp['learnability']:.3f} for the clean data "
                     f"(a drop of {signed(cp['learnability'] - pt['learnability'])})")
        text += "."
    text += (" The lower bounds hold at the same level on their own; an upper and a lower bound together hold "
             f"with probability at least {1 - 2 * alpha:g}.")
    abstain = [pt for pt in curve if pt["learnability"] is None]
    if abstain:
        where = _and([f"η = {pt['eta']:.4g} (η/σ = {pt['eta_over_sigma']:g})" for pt in abstain])
        text += (f" At {where} the certificate abstains: with {n} draws{' (of at least one seed)' if k > 1 else ''} "
                 "no bound exists at this confidence. "
                 "That is a limit of the number of draws, not a learnability of 0 or 1.")
    if cert["max_certified_eta"] is None:
        text += " With these settings no η at all can be certified."
    m = cert["max_certified_eta"]
    tn, dist = cert.get("theta_norm"), cert.get("independent_distance")
    radius = m if m is not None else (max((pt["eta"] for pt in curve), default=None))
    if radius is not None and radius > 0 and (tn or dist):
        label = "the largest certified radius" if m is not None else "the largest η in the grid"
        parts = []
        if tn:
            parts.append(f"is {100 * radius / tn:.3g} % of ‖θ̂‖₂ = {tn:.4g}")
        if dist:
            ratio = dist / radius
            times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
            parts.append(f"is {times} times smaller than the distance between two independently trained clean "
                         f"models of the same recipe ({dist:.4g})")
        text += f" For scale: {label}, η = {radius:.4g}, " + " and ".join(parts) + "."
    elif not (tn or dist):
        text += (" This report does not record ‖θ̂‖₂ or the distance between independently trained models, so the "
                 "radius cannot be put in scale here.")
    paragraphs = [
        Paragraph([Strong("What is guaranteed."), " " + text]),
        Paragraph([Strong("What is not guaranteed."), _victims_covered(cert, data, k),
                   " The certificate says nothing about models farther than η from θ̂, about models trained "
                   "differently (another architecture, recipe, training length, augmentation or a defense), "
                   "about the accuracy of any single unsmoothed model, or about data other than this test set."
                   + _other_victims(report)
                   + (" It concerns the surrogate θ̂, not the protected model whose accuracies are listed above; "
                      "those accuracies, the defenses, the scores and the recovery attack are measurements of "
                      "single runs, not guarantees." if k == 1 else
                      " It concerns the surrogates θ̂, not the protected models whose accuracies are listed above; "
                      "those accuracies and their intervals, the defenses, the scores and the recovery attack are "
                      "measurements, not guarantees.")]),
    ]
    if name == CONTROL:
        paragraphs.append(Paragraph(["This is the clean control: the same certificate computed on the clean data, so "
                                     "that the gap between a poison's row and this one is what the protection buys at "
                                     "that η."]))
    return paragraphs


def in_units(v: float, norm: str) -> str:
    """A budget or measured norm in its unit: l-inf in 8-bit steps (k/255), l0 in pixels."""
    if norm == "linf":
        return f"{v * 255:.3g}/255"
    return f"{v:.0f} pixel{'' if v == 1 else 's'}" if norm == "l0" else f"{v:.4g}"


def _amount(v: float, norm: str) -> str:
    return f"{v:.4g} (= {in_units(v, norm)})" if norm == "linf" else in_units(v, norm)


def _budget(b: dict) -> str:
    if b["norm"] == "none":
        text = "none (no perturbation)"
    elif b.get("declared") is False:  # an audit without --budget: ε holds the measured value
        text = f"none declared ({b['norm']} measured)"
    else:
        text = f"{b['norm']}, ε = {_amount(b['epsilon'], b['norm'])}"
    text += (f"; measured largest per-image norm of released − clean: {_amount(b['measured'], b['norm'])}"
             + (f" (on the {b['measured_on']})" if b.get("measured_on") else ""))
    if "per_image_percentiles" in b:  # audits: the spread over the images, and how many changed at all
        spread = ", ".join(in_units(v, b["norm"]) for v in b["per_image_percentiles"].values())
        text += (f"; per image at {'/'.join(b['per_image_percentiles'])} %: {spread}; "
                 f"{b['changed_fraction']:.1%} of the images changed")
    return text


def _overview(sec: dict, n_test: int) -> Bullets:
    emp = sec["empirical"]
    items = [
        [Strong("Budget"), f": {_budget(sec['budget'])}"],
        [Strong("Clean model test accuracy"), f": {described(emp, 'clean', n_test)}"],
        [Strong("Protected model test accuracy"), f": {described(emp, 'protected', n_test)} at the end of training, "
                                                  f"{measured(emp, 'peak_protected')} at its peak"],
    ]
    if emp.get("clean_train_accuracy") is not None:  # how well each victim fits its own training set
        items.append([Strong("Training-set accuracy"), f": clean model {acc(emp['clean_train_accuracy'])}, "
                      f"protected model {acc(emp['protected_train_accuracy'])} ({TRAIN_FIT})"])
    if sec.get("origin", BUILT_IN) != BUILT_IN:
        items.insert(0, [Strong("Method"), f": from the plugin {sec['origin']}"])
    hist = [f"{len(emp[k])} epochs ({k.split('_')[0]})" for k in ("clean_history", "protected_history") if emp.get(k)]
    if hist:
        items.append([Strong("Training history"), ": " + ", ".join(hist)])
    return Bullets(items)


def _replicates(sec: dict) -> Section | None:
    """One row per seed (K >= 2), so that a reader sees the values behind each mean and interval."""
    reps = sec.get("replicates") or []
    if len(reps) < 2:
        return None
    defenses = list(dict.fromkeys(d for rep in reps for d in rep["defenses"]))
    methods = list(dict.fromkeys(m for rep in reps for m in rep.get("recovery") or {}))
    cert = sec.get("certificate")
    # a seed's `certified` is keyed by η/σ written with format(r, "g"), as the curve's reference point
    key = format(reference_point(cert["curve"])["eta_over_sigma"], "g") if cert else None
    header = ["seed", "clean acc", "protected acc"] + [f"{d} acc" for d in defenses]
    header += [f"certified @ η/σ={key}"] if cert else []
    header += [f"best recovered ({m})" for m in methods]
    rows = []
    for rep in reps:
        row = [str(rep["seed"]), acc(rep["clean_accuracy"]), acc(rep["protected_accuracy"])]
        row += [acc(rep["defenses"].get(d)) or DASH for d in defenses]
        if cert:
            bounds = rep.get("certified") or {}
            row.append(DASH if key not in bounds else ("abstains" if bounds[key] is None else acc(bounds[key])))
        row += [acc((rep.get("recovery") or {}).get(m)) or DASH for m in methods]
        rows.append(row)
    note = (f"One row per seed, {len(reps)} in all; the histories, per-class accuracies and curves in this section "
            "are the first seed's.")
    if cert:
        note += (f" A seed's certified value is its own bound, at α/{len(reps)} = {cert['replicate_alpha']:.3g}; "
                 "the Certificate below quotes the largest of them.")
    return Section("Replicate seeds", [Table(header, rows), Paragraph([note])])


def _defenses(emp: dict) -> Section:
    return Section("Defenses", [Table(["defense", "accuracy", "peak accuracy", "change vs undefended"],
                                      [[d, spread(emp, v["accuracy"], v.get("interval")),
                                        spread(emp, v["peak_accuracy"], v.get("peak_interval")),
                                        signed(v["accuracy"] - emp["protected_accuracy"])]
                                       for d, v in emp["defenses"].items()])])


def _crafting_mark(arch: str, report: dict) -> str:
    return f"{arch} (crafting)" if arch == report["victims"]["crafting_model"] else arch


def _victims_training(report: dict) -> Section:
    """The run's victim panel: which architectures, and the recipe each trained with."""
    panel = report["victims"]
    crafting = panel["crafting_model"]
    rows = [[_crafting_mark(a, report), str(t["epochs"]), str(t["batch_size"]), f"{t['lr']:g}", f"{t['momentum']:g}",
             f"{t['weight_decay']:g}", f"{t['crop']} px" if t["crop"] else "off", "yes" if t["flip"] else "no"]
            for a in figures.victim_names(report) if (t := panel["training"].get(a)) is not None]
    text = (f"The poisons were crafted once, on the crafting model {crafting}. Every victim architecture then "
            "trained with its own recipe on each release (its protected model), on the clean data (its own clean "
            "model) and under each defense of the run; each poison's Victims table holds the accuracies.")
    parts = [text]
    if crafting not in panel["training"]:
        parts += [f" The crafting model {crafting} is not among the victims named; it trained with the run's recipe (",
                  Code("train"), " in the Configuration)."]
    return Section(VICTIMS_TRAINING, [Paragraph(parts), Table(
        ["victim", "epochs", "batch size", "lr", "momentum", "weight decay", "random crop", "flip"], rows)])


def _defended_ratio(v: dict, control: dict | None, d: str) -> str:
    """A victim's accuracy under defense `d` as a fraction of its clean model's under the same defense (the
    clean control's), or with † of its undefended clean model where the control has none under `d`."""
    own = ((v.get("defenses") or {}).get(d) or {}).get("accuracy")
    ref = (((control or {}).get("defenses") or {}).get(d) or {}).get("accuracy")
    if ref is not None:
        return ratio(own, ref)
    return DASH if own is None else f"{ratio(own, v['clean_accuracy'])} †"


def _victims(name: str, sec: dict, report: dict) -> Section:
    """One row per victim architecture of this poison: clean, protected, the ratio, each defense."""
    emp = figures.replicated(report) or {}  # its interval method is every victim's
    control = report["poisons"].get(CONTROL)
    defenses = figures.defense_names(report)
    archs = [(a, v) for a in figures.victim_names(report) if (v := figures.victim_of(report, sec, a)) is not None]
    fits = any(v.get("clean_train_accuracy") is not None for _, v in archs)
    header = ["victim", "clean acc", "protected acc", "protected / clean"]
    header += [h for d in defenses for h in (f"{d} acc", f"{d} / clean under {d}")]
    header += ["training-set acc (clean / protected)"] if fits else []
    rows = []
    for a, v in archs:
        twin = figures.victim_of(report, control, a) if control is not None else None
        row = [_crafting_mark(a, report), spread(emp, v["clean_accuracy"], v.get("clean_interval")),
               spread(emp, v["protected_accuracy"], v.get("protected_interval")),
               ratio(v["protected_accuracy"], v["clean_accuracy"])]
        for d in defenses:
            dv = (v.get("defenses") or {}).get(d) or {}
            row += [spread(emp, dv.get("accuracy"), dv.get("interval")) or DASH, _defended_ratio(v, twin, d)]
        if fits:
            row.append(DASH if v.get("clean_train_accuracy") is None else
                       f"{acc(v['clean_train_accuracy'])} / {acc(v.get('protected_train_accuracy')) or DASH}")
        rows.append(row)
    daggers = any(c.endswith("†") for row in rows for c in row)
    return Section("Victims", [Paragraph([_victims_note(name, report, control is not None, daggers, fits)]),
                               Table(header, rows)])


def _victims_note(name: str, report: dict, has_control: bool, daggers: bool, fits: bool) -> str:
    """What a Victims table is and how its ratios read."""
    if name == CONTROL:  # nothing was crafted: its release is the clean data
        text = ("The clean control's release is the clean data itself, so each victim's protected model here is a "
                "second clean model, trained with its own recipe (see "
                f"“{VICTIMS_TRAINING}” above): the reference each poison's Victims table is read against. ")
    else:
        text = (f"This poison was crafted once, on the crafting model {report['victims']['crafting_model']}; each "
                f"architecture below trained on its release and on the clean data with its own recipe (see "
                f"“{VICTIMS_TRAINING}” above). ")
    text += ("Protected / clean is the protected model's accuracy as a fraction of the same victim's clean model; "
             "under a defense, as a fraction of that victim's clean model trained under the same defense (the clean "
             f"control's{'' if has_control else ', absent in this run'})")
    if daggers:
        text += ", or, marked †, of its undefended clean model where the control has no model under that defense"
    text += "." + (f" Training-set accuracy is {TRAIN_FIT}." if fits else "")
    return text


def _certificate(name: str, sec: dict, report: dict) -> Section:
    control = report["poisons"].get(CONTROL)
    return Section("Certificate", [_certificate_params(sec["certificate"]), _certificate_table(name, sec, control)]
                   + _guarantee(name, sec, report))


UD_SCALE = ("#LP(model) / #LP(clean model), both counted against the undefended clean model's threshold β; "
            "0 = no layer sharper than β (truly unlearnable), 1 = as many as the clean model, above 1 = more "
            "(the model keeps learning, often the wrong features: the paper reports TAP above 1 and defenses "
            "raising UD). A defended model's UD is on this same scale, so it can exceed 1; the clean control's "
            "UD under the same defense is that defense's own baseline.")


def _ud_text(s: dict) -> str:
    return f"{s['ud']:.4g}" if s["ud"] is not None else f"not available ({s.get('ud_null_reason') or 'no reason'})"


def _sal_ud(s: dict) -> Section:
    items = [
        [Strong("UD"), f": {_ud_text(s)}"],
        [Strong("LP"), f": protected {num(s['lp_protected'])}, clean {num(s['lp_clean'])}"],
        [Strong("Settings"), f": β = {num(s['beta'])}, ρ = {num(s['rho'])}, {s['layers']} layers, "
                             f"profile {s['profile']}"],
    ]
    if s.get("defended"):
        items.append([Strong("UD of the model trained under each defense"),
                      " (same β and clean #LP): " + ", ".join(f"{d} {_ud_text(v)}" for d, v in s["defended"].items())])
    items.append([Strong("Reading UD"), f": {UD_SCALE}"])
    return Section("SAL / UD", [Bullets(items)])


def _mutual_information(m: dict) -> Section:
    return Section("Mutual information", [Bullets([
        [Strong("Estimator"), f": {m['estimator']}, {m['projections']} projections, {m['images']} "
                              f"{m.get('images_from', 'test')} images"],
        [Strong("MI"), f": clean {num(m['clean'])}, protected {num(m['protected'])}, gap {num(m['gap'])}, "
                       f"histogram gap {num(m['histogram_gap'])}"],
        *([[Strong("Protocol"), f": {m['protocol']}"]] if m.get("protocol") else []),
    ])])


def _covariance(c: dict) -> Section:
    score = num(c["score"]) if c["score"] is not None else f"not available ({c['score_null_reason']})"
    images = "training images" if c.get("images_from") == "training" else "clean test images"
    items = [[Strong("Covariance score"), f": {score} (protected {num(c['protected'])} / clean {num(c['clean'])}, "
                                          f"{c['images']} {images})"]]
    if "within_total_protected" in c:  # newer reports
        items.append([Strong("Total spread"), f": protected {num(c['total_protected'])} / clean "
                                              f"{num(c['total_clean'])} = {num(c['total_score'])}"])
        items.append([Strong("Within / total"), f": protected {num(c['within_total_protected'])}, clean "
                                                f"{num(c['within_total_clean'])} (lower: tighter classes)"])
    items.append([Strong("Definition"), f": {c.get('definition') or DASH}"])
    return Section("Intra-class covariance", [Bullets(items)])


def _recovery(sec: dict) -> Section:
    children: list = [Paragraph(["Recovered accuracy is the test accuracy of one unsmoothed model the attack found "
                                 "within η of the surrogate; the certified value bounds the smoothed q-quantile, so "
                                 "the two measure different things and are shown side by side for orientation."])]
    curve = curve_of(sec)
    for method, r in sec["recovery"].items():
        children.append(Paragraph([Code(method), f": starts from the {r['start']}, BN {r['bn']}, "
                                                  f"constraint {r['constraint']}."]))
        if "best_interval" in r:
            emp = sec["empirical"]
            best = spread(emp, r["best_accuracy"], r["best_interval"])
            children.append(Paragraph([f"Best recovered accuracy: {best}" + (
                f", the mean over the {emp['seeds']} seeds of each seed's best on its own curve; the table is the "
                "first seed's curve." if emp["seeds"] >= 2 else ".")]))
        rows = []
        for pt in r["curve"]:
            cp = point_at(curve, pt["eta_over_sigma"])
            cert_cell = DASH if cp is None else ("abstains" if cp["learnability"] is None
                                                 else acc(cp["learnability"]))
            rows.append([f"{pt['eta']:.4g}", f"{pt['eta_over_sigma']:g}", acc(pt["accuracy"]), cert_cell])
        children.append(Table(["η", "η/σ", "recovered accuracy", "certified upper"], rows))
    return Section("Recovery attack", children)


def _poison(name: str, sec: dict, report: dict, figs: list) -> Section:
    children: list = [_overview(sec, report["dataset"]["n_test"])]
    replicates = _replicates(sec)
    if replicates:
        children.append(replicates)
    if sec["empirical"].get("defenses"):
        children.append(_defenses(sec["empirical"]))
    if report.get("victims"):
        children.append(_victims(name, sec, report))
    if sec.get("certificate"):
        children.append(_certificate(name, sec, report))
    if sec.get("sal_ud"):
        children.append(_sal_ud(sec["sal_ud"]))
    if sec.get("mutual_information"):
        children.append(_mutual_information(sec["mutual_information"]))
    if sec.get("covariance"):
        children.append(_covariance(sec["covariance"]))
    if sec.get("recovery"):
        children.append(_recovery(sec))
    # the poison's figures follow its last subsection
    children += [Figure(spec.filename, spec.caption) for spec in figs]
    return Section(f"Poison: {poison_title(name)}", children)


def _execution(report: dict, figs: list) -> Section:
    """Task seconds per stage (parallel tasks overlap, so they can add up to more than the wall
    time), the wall time, and the timeline of the tasks that ran."""
    t = dict(report.get("timings") or {})
    wall = t.pop("wall", None)
    rows = [[stage, f"{sec:.1f}"] for stage, sec in t.items()]
    rows.append(["wall time" if wall is not None else "total", f"{wall if wall is not None else sum(t.values()):.1f}"])
    children: list = [Table(["stage", "seconds"], rows)]
    ex = report.get("execution")
    if ex:
        nodes = {task["node"] for task in ex["tasks"]}
        children.insert(0, Paragraph([f"{len(ex['tasks'])} tasks ran ({ex['cached']} came from the cache), "
                                      f"executor {ex['executor']}, on {len(nodes)} node(s)."]))
    children += [Figure(spec.filename, spec.caption) for spec in figs]
    return Section("Execution", children)


def build_document(report: dict) -> Section:
    """The whole report as a format-free document (its title is the top section's)."""
    names = list(report["poisons"])
    plan = figures.plan(report)
    verdict = _verdict(report)
    children = ([verdict] if verdict else []) + _header(report)
    if report.get("warnings"):
        children.append(Section("Warnings", [Bullets([[w] for w in report["warnings"]])]))
    if report.get("victims"):
        children.append(_victims_training(report))
    children.append(_summary(report))
    literature = comparison_section(report)
    if literature is not None:
        children.append(literature)
    children += [Figure(spec.filename, spec.caption) for spec in plan if spec.poison is None and spec.kind != "timeline"]
    children += [_poison(name, sec, report, [spec for spec in plan if spec.poison == name])
                 for name, sec in report["poisons"].items()]
    if report.get("timings") or report.get("execution"):
        children.append(_execution(report, [spec for spec in plan if spec.kind == "timeline"]))
    children.append(Section("Configuration", [Preformatted(json.dumps(report["config"], indent=2, sort_keys=True,
                                                                      ensure_ascii=False))]))
    return Section("Unlearnable-examples certification report" + (f": {', '.join(names)}" if names else ""), children)
