"""The victim panel in the report (`--victims`): the run's recipes, each poison's Victims table, the
figure, the transfer block and what the certificate does not cover; a run without a panel renders
as before."""
import pytest

from certify.report import validate_report, write_report
from certify.report.content import build_document
from certify.report.document import Paragraph, Section, Table, walk
from certify.report.figures import plan, render
from certify.report.html import build_html
from certify.report.markdown import build_markdown
from sample_reports import make_report

PANEL = ("cnn16", "resnet20")  # the crafting model cnn not among them


def _section(doc: Section, title: str, within: str | None = None) -> Section:
    if within is not None:
        doc = _section(doc, within)
    return next(b for _, b in walk(doc) if isinstance(b, Section) and b.title == title)


def _table(section: Section) -> Table:
    return next(b for b in section.children if isinstance(b, Table))


def _text(section: Section, sep: str = " ") -> str:
    return sep.join("".join(p if isinstance(p, str) else p.text for p in b.parts) for _, b in walk(section)
                    if isinstance(b, Paragraph))


def _rows(table: Table) -> dict[str, dict[str, str]]:
    return {row[0]: dict(zip(table.header, row)) for row in table.rows}


def test_each_poison_has_a_victims_table_with_the_crafting_model_first():
    r = make_report(victims=PANEL)
    validate_report(r)
    table = _table(_section(build_document(r), "Victims", within="Poison: miue"))
    assert table.header == ["victim", "clean acc", "protected acc", "protected / clean", "jpeg acc",
                            "jpeg / clean under jpeg", "grayscale acc", "grayscale / clean under grayscale",
                            "training-set acc (clean / protected)"]
    assert [row[0] for row in table.rows] == ["cnn (crafting)", "cnn16", "resnet20"]
    rows = _rows(table)
    # the crafting model's row is its own measurement, the same as the poison's empirical section
    assert rows["cnn (crafting)"]["protected acc"] == "0.210" and rows["cnn (crafting)"]["protected / clean"] == \
        f"{0.21 / 0.535:.3f}" == "0.393"
    v = r["poisons"]["miue"]["victims"]["resnet20"]
    assert (v["clean_accuracy"], v["protected_accuracy"]) == pytest.approx((0.635, 0.41))
    assert rows["resnet20"]["clean acc"] == "0.635" and rows["resnet20"]["protected acc"] == "0.410"
    assert rows["resnet20"]["protected / clean"] == f"{0.41 / 0.635:.3f}" == "0.646"
    assert rows["resnet20"]["jpeg acc"] == "0.410"
    # the underfitting victim shows: 0.790 of its own clean training images
    assert rows["resnet20"]["training-set acc (clean / protected)"] == "0.790 / 0.980"
    md = build_markdown(r)
    assert "| cnn (crafting) | 0.535 | 0.210 | 0.393 |" in md and "| cnn16 | 0.585 | 0.310 | 0.530 |" in md
    # named among the victims, the crafting model still leads; the others keep the user's order
    r = make_report(victims=("resnet20", "cnn", "cnn16"))
    validate_report(r)
    table = _table(_section(build_document(r), "Victims", within="Poison: miue"))
    assert [row[:3] for row in table.rows] == [["cnn (crafting)", "0.535", "0.210"], ["resnet20", "0.585", "0.310"],
                                               ["cnn16", "0.635", "0.410"]]


def test_a_defense_ratio_is_to_the_victims_clean_model_under_the_same_defense():
    r = make_report(victims=PANEL)
    doc = build_document(r)
    rows = _rows(_table(_section(doc, "Victims", within="Poison: miue")))
    ctl = r["poisons"]["none"]["victims"]["cnn16"]["defenses"]["jpeg"]["accuracy"]
    own = r["poisons"]["miue"]["victims"]["cnn16"]["defenses"]["jpeg"]["accuracy"]
    assert (own, ctl) == pytest.approx((0.36, 0.685))
    assert rows["cnn16"]["jpeg / clean under jpeg"] == f"{own / ctl:.3f}" == "0.526"
    # the crafting model's, not named in the panel, against the control's own empirical section
    assert rows["cnn (crafting)"]["jpeg / clean under jpeg"] == f"{0.31 / 0.635:.3f}"
    assert "†" not in build_markdown(r)
    # where the control has no model under jpeg for a victim: its undefended clean accuracy, marked
    del r["poisons"]["none"]["victims"]["cnn16"]["defenses"]["jpeg"]
    section = _section(build_document(r), "Victims", within="Poison: miue")
    rows = _rows(_table(section))
    assert rows["cnn16"]["jpeg / clean under jpeg"] == f"{0.36 / 0.585:.3f} †"
    assert rows["resnet20"]["jpeg / clean under jpeg"] == f"{0.41 / 0.735:.3f}"  # its own control under jpeg
    assert "marked †, of its undefended clean model" in _text(section)


def test_the_control_has_its_victims_table_too():
    doc = build_document(make_report(victims=PANEL))
    section = _section(doc, "Victims", within="Poison: none (clean control)")
    rows = _rows(_table(section))
    assert rows["cnn16"]["protected / clean"] == rows["cnn16"]["jpeg / clean under jpeg"] == "1.000"
    assert _text(section).startswith("The clean control's release is the clean data itself")  # nothing crafted
    assert _text(_section(doc, "Victims", within="Poison: miue")).startswith(
        "This poison was crafted once, on the crafting model cnn;")


def test_three_seeds_give_every_victim_its_interval():
    r = make_report(seeds=3, victims=PANEL)
    validate_report(r)
    v = r["poisons"]["miue"]["victims"]["cnn16"]
    assert [rep["victims"]["cnn16"]["protected_accuracy"] for rep in r["poisons"]["miue"]["replicates"]] == \
        pytest.approx([0.31, 0.325, 0.295])
    half = f"{v['protected_interval'][1] - v['protected_accuracy']:.3f}"
    assert half == "0.037"
    rows = _rows(_table(_section(build_document(r), "Victims", within="Poison: miue")))
    assert rows["cnn16"]["protected acc"] == f"0.310 ± {half}"
    assert rows["cnn16"]["jpeg acc"] == "0.360 ± 0.056"
    assert rows["cnn16"]["protected / clean"] == "0.530"  # of the means
    one = make_report(seeds=1, victims=PANEL)
    lo, hi = one["poisons"]["miue"]["victims"]["cnn16"]["protected_interval"]
    rows = _rows(_table(_section(build_document(one), "Victims", within="Poison: miue")))
    assert rows["cnn16"]["protected acc"] == f"0.310 [{lo:.3f}, {hi:.3f}]"  # Clopper-Pearson: no ±


def test_the_run_lists_each_victims_recipe():
    r = make_report(victims=PANEL)
    r["victims"]["training"]["resnet20"].update(lr=0.1, crop=4, flip=False, epochs=30)
    doc = build_document(r)
    section = _section(doc, "Victims and their training")
    titles = [b.title for b in doc.children if isinstance(b, Section)]
    assert titles.index("Victims and their training") < titles.index("Summary")
    table = _table(section)
    assert table.header == ["victim", "epochs", "batch size", "lr", "momentum", "weight decay", "random crop", "flip"]
    assert table.rows == [["cnn16", "15", "128", "0.05", "0.9", "0.0005", "off", "yes"],
                          ["resnet20", "30", "128", "0.1", "0.9", "0.0005", "4 px", "no"]]
    assert "The crafting model cnn is not among the victims named" in _text(section)
    # the Victims table points to it
    assert "(see “Victims and their training” above)" in _text(_section(doc, "Victims", within="Poison: miue"))
    named = _section(build_document(make_report(victims=("cnn", "cnn16"))), "Victims and their training")
    assert [row[0] for row in _table(named).rows] == ["cnn (crafting)", "cnn16"]
    assert "not among the victims" not in _text(named)


def test_a_report_without_victims_renders_as_before():
    r = make_report(seeds=3)
    md = build_markdown(r)
    assert "Victims" not in md and "crafting" not in md and "victims.png" not in md
    assert "Victims" not in build_html(r, {})


def _not_guaranteed(r: dict, poison: str = "Poison: miue") -> str:
    cert = _section(build_document(r), "Certificate", within=poison)
    return next(t for t in _text(cert, sep="\n").split("\n") if t.startswith("What is not guaranteed."))


def test_the_certificate_names_the_victims_it_does_not_cover():
    for name in ("Poison: miue", "Poison: none (clean control)"):
        text = _not_guaranteed(make_report(victims=PANEL), name)
        assert ("It bounds the surrogate of the crafting model, cnn (its architecture), not the other victims cnn16 "
                "and resnet20, whose protection is measured only empirically (their rows in the Victims table "
                "above).") in text
    assert "not the other victims cnn16, resnet20 and mlp," in _not_guaranteed(
        make_report(victims=("cnn16", "cnn", "resnet20", "mlp")))
    poison = [b.title for b in _section(build_document(make_report(victims=PANEL)), "Poison: miue").children
              if isinstance(b, Section)]
    assert poison.index("Victims") < poison.index("Certificate")  # "above" holds
    assert "crafting model" not in _not_guaranteed(make_report())


def _drawn(r: dict):
    import matplotlib

    from certify.report.figures import _RC, draw

    spec = next(s for s in plan(r) if s.filename == "victims.png")
    with matplotlib.rc_context(_RC):
        fig = draw(r, spec)
        fig.draw_without_rendering()
    return fig


def test_the_victims_figure_is_planned_and_drawn_only_with_victims():
    assert "victims.png" not in {s.filename for s in plan(make_report(seeds=3))}
    r = make_report(seeds=3, victims=PANEL)
    [spec] = [s for s in plan(r) if s.filename == "victims.png"]
    assert spec.poison is None and "crafting model cnn" in spec.caption
    png = render(r, spec)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == render(r, spec)
    assert f"![{spec.caption}](figures/victims.png)" in build_markdown(r)


def test_the_victims_figure_shows_each_protected_accuracy_its_interval_and_clean_tick():
    r = make_report(seeds=3, victims=PANEL)
    fig = _drawn(r)
    ax, = fig.axes
    # bars per architecture (cnn, cnn16, resnet20), each over the poisons none, miue
    heights = [round(p.get_height(), 3) for p in ax.patches]
    assert heights == [0.535, 0.21, 0.585, 0.31, 0.635, 0.41]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    _, _, (lines,) = bars[1].errorbar.lines  # cnn16's error bars, over none then miue
    lo, hi = r["poisons"]["miue"]["victims"]["cnn16"]["protected_interval"]
    assert [round(float(y), 6) for y in lines.get_segments()[1][:, 1]] == [round(lo, 6), round(hi, 6)]
    # the ticks are the horizontal black segments (the error bars are vertical)
    clean = sorted(round(float(seg[0][1]), 3) for c in ax.collections for seg in c.get_segments()
                   if seg[0][1] == seg[1][1] and c.get_color().tolist() == [[0, 0, 0, 1]])
    assert clean == [0.535, 0.535, 0.585, 0.585, 0.635, 0.635]
    legend, = fig.legends  # above the axes: it covers no bar
    assert legend.get_window_extent().y0 >= ax.get_window_extent().y1
    assert [t.get_text() for t in legend.get_texts()] == ["cnn (crafting)", "cnn16", "resnet20", "its clean model"]


def test_written_report_holds_the_victims_figure(tmp_path):
    r = make_report(victims=PANEL)
    for sec in r["poisons"].values():  # fewer figures to draw
        for key in ("certificate", "sal_ud", "mutual_information", "recovery"):
            del sec[key]
    write_report(r, tmp_path)
    assert (tmp_path / "figures" / "victims.png").read_bytes()[:4] == b"\x89PNG"
    assert '<img src="data:image/png;base64,' in (tmp_path / "report.html").read_text()
    bare = make_report()
    for sec in bare["poisons"].values():
        for key in ("certificate", "sal_ud", "mutual_information", "recovery"):
            del sec[key]
    write_report(bare, tmp_path / "bare")
    assert not (tmp_path / "bare" / "figures" / "victims.png").exists()


def test_the_literature_comparison_has_the_transfer_table():
    from certify.scores.comparison import comparison

    r = make_report(victims=PANEL, poisons=("none", "miue", "em"))
    r["comparison"] = comparison(r["poisons"])
    validate_report(r)
    section = _section(build_document(r), "Comparison with the literature")
    table = section.children[-1]
    assert table.header == ["poison", "cnn (crafting)", "cnn16", "resnet20"]
    # the control is no poison: its protected models are clean ones
    assert table.rows == [["miue", "0.210 (0.393)", "0.310 (0.530)", "0.410 (0.646)"],
                          ["em", f"0.300 ({0.3 / 0.5:.3f})", f"0.400 ({0.4 / 0.55:.3f})", f"0.500 ({0.5 / 0.6:.3f})"]]
    text = _text(section)
    assert ("Transfer is measured here as the protection crafted on the crafting model cnn seen by the other "
            "architectures; how this compares with the MI-UE paper's and APBench's transfer results is discussed "
            "in reports/POISONS.md (\"Transfer to other architectures\").") in text
    # a report without comparison (older, or hand-made) still gets the transfer block, in the same section
    del r["comparison"]
    assert _section(build_document(r), "Comparison with the literature").children[-1] == table
    r = make_report(poisons=("none", "miue"))
    r["comparison"] = comparison(r["poisons"])
    assert "Transfer" not in _text(_section(build_document(r), "Comparison with the literature"))
