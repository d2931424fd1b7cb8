"""The report's pictures and verdict lines: per-class accuracies, the run-time sample grids (written
by `certify run` and `certify poison`, kept by re-rendering), and the verdict opening the report."""
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from certify.cli import main
from certify.errors import UserError
from certify.export import export_released
from certify.report import render, write_report
from certify.report.content import build_document
from certify.report.document import Bullets, Paragraph, Section
from certify.report.figures import SAMPLE_CLASSES, plan, sample_grid, sample_indices
from certify.report.markdown import render_markdown
from certify.training import evaluate, per_class_accuracy
from sample_reports import make_report


class Lookup(nn.Module):
    """Predicts the class written in an image's first pixel."""

    def __init__(self, k):
        super().__init__()
        self.k, self.unused = k, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), self.k).float()


def test_per_class_accuracy_counts_each_class_of_the_test_set():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 3])
    pred = torch.tensor([0, 0, 1, 3, 1, 1, 0])  # class 0: 2 of 4, class 1: 2 of 2, class 2: none, class 3: 0 of 1
    x = pred.view(-1, 1).float()
    assert per_class_accuracy(Lookup(4), x, y, 4, batch_size=3) == [0.5, 1.0, None, 0.0]
    assert evaluate(Lookup(4), x, y, batch_size=3) == pytest.approx(4 / 7)


def test_sample_indices_are_a_seeded_choice_per_class():
    y = np.repeat(np.arange(12), 5)
    y[y == 2] = 1  # class 2 has no images, class 1 has ten
    idx = sample_indices(y, 12, seed=3)
    labels = [int(y[i]) for i in idx]
    assert labels == sorted(labels) and set(labels) == set(range(SAMPLE_CLASSES)) - {2}  # the first 10 classes
    assert all(labels.count(c) == 3 for c in set(labels))
    assert len(set(idx)) == len(idx)
    assert sample_indices(y, 12, seed=3) == idx and sample_indices(y, 12, seed=4) != idx
    assert sample_indices(np.array([0, 0, 1]), 2, seed=0) == [0, 1, 2]  # fewer than asked: all of them


def test_sample_grid_is_a_deterministic_png_that_shows_the_perturbation():
    from PIL import Image

    rng = np.random.default_rng(0)
    clean = rng.random((4, 3, 6, 6))
    released = np.clip(clean + rng.choice([-2 / 255, 2 / 255], clean.shape), 0, 1)
    labels = np.array([0, 0, 1, 1])
    png = sample_grid(clean, released, labels, ["cat", "dog"], "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == sample_grid(clean, released, labels, ["cat", "dog"], "t")
    assert png != sample_grid(clean, clean, labels, ["cat", "dog"], "t")
    w, h = Image.open(io.BytesIO(png)).size
    assert w > h  # two rows of two (clean, released, perturbation) triples


# ----------------------------------------------------------------------------- the report

def _with_pictures(r):
    r["dataset"]["class_names"] = [f"class {i}" for i in range(10)]
    for name, sec in r["poisons"].items():
        sec["empirical"]["per_class"] = {"clean": [0.5] * 10, "protected": [0.2] * 9 + [None]}
        sec["verdict"] = {"level": "none" if name == "none" else "strong", "reasons": [f"why {name}"]}
    r["poisons"]["miue"]["samples"] = {"indices": [0, 1, 2]}
    r["config"]["verdict"] = {"strong": 0.5, "partial": 0.8, "weak": 0.95, "eta_over_sigma": 0.1,
                              "certified_gap": 0.05}
    return r


def test_the_report_opens_with_one_verdict_line_per_poison():
    doc = build_document(_with_pictures(make_report()))
    first = doc.children[0]
    assert isinstance(first, Section) and first.title == "Verdict"
    lines, note = first.children
    assert isinstance(lines, Bullets) and isinstance(note, Paragraph)
    assert [item[0].text for item in lines.items] == ["none (clean control): none", "miue: strong"]
    assert lines.items[1][1] == " — why miue"
    assert "strong at most 0.5, partial at most 0.8, weak at most 0.95" in note.parts[0]
    # a report from before verdicts has no such section
    assert not any(isinstance(b, Section) and b.title == "Verdict" for b in build_document(make_report()).children)


def test_run_time_figures_are_written_kept_and_embedded(tmp_path):
    r = _with_pictures(make_report())
    for sec in r["poisons"].values():  # fewer figures to draw
        for key in ("certificate", "sal_ud", "mutual_information", "recovery"):
            del sec[key]
        del sec["empirical"]["defenses"]
    names = {s.filename: s.kind for s in plan(r)}
    assert names["samples-miue.png"] == "samples" and names["per-class-miue.png"] == "per_class"
    assert "samples-none.png" not in names and "per-class-none.png" not in names  # the control: no perturbation
    assert [s.kind for s in plan(r) if s.poison == "miue"][0] == "samples"  # the poison's pictures open with it
    grid = sample_grid(np.zeros((1, 1, 4, 4)), np.full((1, 1, 4, 4), 0.1), np.array([0]), ["a"], "t")
    write_report(r, tmp_path, {"samples-miue.png": grid})
    assert (tmp_path / "figures" / "samples-miue.png").read_bytes() == grid
    assert (tmp_path / "figures" / "per-class-miue.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(names)
    assert "(figures/samples-miue.png)" in (tmp_path / "report.md").read_text()
    # `certify report` re-renders from the JSON and keeps (and embeds) the grid it cannot redraw
    (tmp_path / "report.html").unlink()
    render(tmp_path / "report.json")
    assert (tmp_path / "report.html").read_text() == html
    assert (tmp_path / "figures" / "samples-miue.png").read_bytes() == grid
    # without the file the page says so instead of failing
    (tmp_path / "figures" / "samples-miue.png").unlink()
    render(tmp_path / "report.json")
    assert "Figure samples-miue.png is not available" in (tmp_path / "report.html").read_text()


def test_export_writes_extra_files_beside_the_images(tmp_path, digits):
    x, y = digits.x_train[:40], digits.y_train[:40]
    out = export_released(x, y, digits.classes, tmp_path / "out", "png", {"poison": "x"},
                          extra_files={"samples-x.png": b"\x89PNG"})
    assert (out / "samples-x.png").read_bytes() == b"\x89PNG"
    from certify.data import load_split

    back, labels, _ = load_split(f"folder:{out}")  # the class folders only
    assert len(back) == 40
    for bad in ("../x.png", ".hidden", "manifest.json"):
        with pytest.raises(UserError, match="extra file"):
            export_released(x, y, digits.classes, tmp_path / "o2", "png", {}, extra_files={bad: b""})


def test_run_and_poison_end_to_end_on_digits(tmp_path, capsys, digits):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("train:\n  epochs: 2\n")
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    assert main(["run", "--dataset", "digits", "--poison", "random", "--executor", "serial", "--skip",
                 "certify,scores,recovery", "--config", str(cfg), "--cache-dir", cache, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["class_names"] == [str(i) for i in range(10)]
    none, rnd = report["poisons"]["none"], report["poisons"]["random"]
    assert none["verdict"]["level"] == "none"
    assert rnd["verdict"]["level"] in ("strong", "partial", "weak", "none")
    assert "certificate not computed: judged on the measured accuracies alone" in rnd["verdict"]["reasons"]
    assert rnd["verdict"]["reasons"][-1].startswith("untried: a recovery attack: strong needs the minimum attacker suite")
    # per-class accuracies are of the test set: weighted by its class counts they give the accuracy
    counts = np.bincount(digits.y_test.numpy(), minlength=10)
    for key, total in (("clean", rnd["empirical"]["clean_accuracy"]),
                       ("protected", rnd["empirical"]["protected_accuracy"])):
        assert np.dot(rnd["empirical"]["per_class"][key], counts) / counts.sum() == pytest.approx(total)
    assert none["empirical"]["per_class"]["protected"] == rnd["empirical"]["per_class"]["clean"]
    assert len(rnd["samples"]["indices"]) == 30 and "samples" not in none
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"samples-random.png", "per-class-random.png"} <= figs and "samples-none.png" not in figs
    assert "## Verdict" in (out / "report.md").read_text()

    export = tmp_path / "export"
    assert main(["poison", "--dataset", "digits", "--poison", "random", "--cache-dir", cache,
                 "--out", str(export)]) == 0
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["samples"] == {"figure": "samples-random.png", "indices": rnd["samples"]["indices"]}
    # the same grid as the run's: the same release, the same seeded choice
    assert (export / "samples-random.png").read_bytes() == (out / "figures" / "samples-random.png").read_bytes()


# ----------------------------------------------------------------------------- legibility of the figures

def _drawn(r, filename):
    import matplotlib

    from certify.report.figures import _RC, draw

    spec = next(s for s in plan(r) if s.filename == filename)
    with matplotlib.rc_context(_RC):
        fig = draw(r, spec)
        fig.draw_without_rendering()
    return fig, spec


def test_the_defenses_legend_sits_above_the_bars_not_on_them():
    fig, _ = _drawn(make_report(), "defenses.png")
    ax, = fig.axes
    legend, = fig.legends  # a figure legend, laid out outside the axes
    assert legend.get_window_extent().y0 >= ax.get_window_extent().y1
    assert [t.get_text() for t in legend.get_texts()] == ["no defense", "jpeg", "grayscale"]


def test_every_ud_bar_carries_its_value_a_zero_one_too():
    r = make_report()
    r["poisons"]["miue"]["sal_ud"].update(ud=0.0)  # OPS-like: no layer learns, no bar to see
    r["poisons"]["miue"]["sal_ud"]["defended"] = {"jpeg": {"ud": 1 + 1 / 3, "ud_null_reason": None}}
    r["poisons"]["none"]["sal_ud"]["defended"] = {"jpeg": {"ud": None, "ud_null_reason": "#LP(clean) = 0"}}
    fig, spec = _drawn(r, "ud.png")
    ax, = fig.axes
    # bars per series in poison order (none, miue): undefended 1, 0; under jpeg n/a, 1.33
    assert [t.get_text() for t in ax.texts] == ["1", "0", "n/a", "1.33"]
    zero = ax.texts[1]
    assert zero.xy[1] == 0 and zero.get_va() == "bottom"  # just above the axis
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"no defense", "under jpeg", "1 = the clean model"}
    assert "above 1" in spec.caption and "same defense" in spec.caption  # a UD above 1 is explained
    # the zero bar is seen: a stroke on the axis, in the colour of its series, under its bold label
    from matplotlib.colors import same_color

    grey = ax.containers[0].patches[0].get_facecolor()  # the undefended series' colour
    strokes = [c for c in ax.collections if all(y == 0 for seg in c.get_segments() for _, y in seg)]
    assert len(strokes) == 1 and same_color(strokes[0].get_colors()[0], grey)
    (x0, _), (x1, _) = strokes[0].get_segments()[0]
    bar = ax.containers[0].patches[1]  # miue's undefended bar, height 0
    assert bar.get_x() <= x0 < x1 <= bar.get_x() + bar.get_width()
    assert same_color(zero.get_color(), grey)
    assert zero.get_fontweight() == "bold"


def test_the_ud_legend_colours_are_the_bars_colours():
    """Beside defended series the undefended bars are one series: every bar has its legend entry's colour
    (a red poison bar under a grey "no defense" entry was read as a series the legend did not name)."""
    from matplotlib.colors import same_color

    r = make_report()
    for name in ("none", "miue"):
        r["poisons"][name]["sal_ud"]["defended"] = {"jpeg": {"ud": 1.0, "ud_null_reason": None}}
    fig, _ = _drawn(r, "ud.png")
    ax, = fig.axes
    entries = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    for container, label in zip(ax.containers, ("no defense", "under jpeg")):
        assert all(same_color(b.get_facecolor(), entries[label].get_facecolor()) for b in container.patches)
    # alone, the undefended bars keep telling the control from the poisons, and need no legend entry
    fig, _ = _drawn(make_report(), "ud.png")
    none, miue = fig.axes[0].containers[0].patches
    assert not same_color(none.get_facecolor(), miue.get_facecolor())


def test_a_class_at_zero_accuracy_is_a_labelled_stroke_not_nothing():
    r = make_report()
    pc = {"clean": [0.5] * 10, "protected": [0.3] * 9 + [0.0]}
    r["poisons"]["miue"]["empirical"]["per_class"] = pc
    fig, spec = _drawn(r, "per-class-miue.png")
    ax, = fig.axes
    labels = [t for t in ax.texts if t.get_text() == "0"]
    assert len(labels) == 1 and labels[0].xy == (pytest.approx(9.2), 0)
    strokes = [c for c in ax.collections if all(y == 0 for seg in c.get_segments() for _, y in seg)]
    assert len(strokes) == 1
    assert "labelled 0" in spec.caption


def test_the_draws_legend_covers_no_bar_of_the_histogram():
    """The draws pile up at the left, under the legend's corner: the y-axis rises so that they end below it."""
    r = make_report()
    rng = np.random.default_rng(0)
    r["poisons"]["miue"]["certificate"]["draws"] = [float(a) for a in np.concatenate(
        [rng.normal(0.12, 0.01, 180), rng.normal(0.45, 0.02, 20)])]  # tall at the left
    fig, _ = _drawn(r, "certificate-miue.png")
    hx = fig.axes[-1]
    box = hx.get_legend().get_window_extent()
    bars = [b.get_window_extent() for b in hx.patches if b.get_height() > 0]
    under = [b for b in bars if b.x0 < box.x1 and b.x1 > box.x0]
    assert under, "the test must put bars under the legend"
    assert all(b.y1 < box.y0 for b in under)


def test_abstain_markers_of_every_curve_lie_on_the_eta_axis():
    r = make_report()
    fig, spec = _drawn(r, "certificate-miue.png")
    ax = fig.axes[0]
    marks = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(marks) == 2  # the poison's and the control's: both curves abstain at the largest η
    assert {float(y) for ln in marks for y in ln.get_ydata()} == {0.0}
    assert all(ln.get_transform() == ax.transData for ln in marks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("abstains" in t for t in labels) == 1 and "× at y = 0" in labels[-1]
    assert "y = 0" in spec.caption
    fig, _ = _drawn(r, "recovery-miue.png")
    assert {float(y) for ln in fig.axes[0].lines if ln.get_marker() == "x" for y in ln.get_ydata()} == {0.0}


def test_html_tables_scroll_inside_their_own_box():
    import re

    from certify.report.html import CSS, build_html

    page = build_html(make_report(), {})
    assert re.search(r"\.table-wrap\s*\{[^}]*overflow-x:\s*auto", CSS)
    # its scrollbar is always drawn, not an overlay seen only while scrolling: a cut table shows it goes on
    assert re.search(r"\.table-wrap::-webkit-scrollbar\s*\{[^}]*height", CSS)
    assert re.search(r"\.table-wrap\s*\{[^}]*scrollbar-color", CSS)
    tables = page.count("<table>")
    assert tables > 0 and page.count('<div class="table-wrap"><table>') == tables
    assert page.count("</table></div>") == tables


def test_the_report_says_how_to_read_a_ud_above_one():
    from certify.report.content import UD_SCALE

    r = make_report()
    r["poisons"]["miue"]["sal_ud"]["defended"] = {"jpeg": {"ud": 1.5, "ud_null_reason": None}}
    md = render_markdown(build_document(r))
    assert "Reading UD" in md and "above 1" in UD_SCALE and "jpeg 1.5" in md
