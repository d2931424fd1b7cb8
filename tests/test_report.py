"""certify.report: schema validation, the report's content, writing report.json/md/html/figures,
re-rendering, loading."""

import base64
import html
import json
import re

import numpy as np
import pytest

from certify.errors import UserError
from certify.report import load_report, render, validate_report, write_report
from certify.report.content import build_document, spread
from certify.report.document import Bullets, Paragraph, Section, Strong, Table, walk
from certify.report.figures import plan
from certify.report.html import build_html
from certify.report.markdown import build_markdown
from certify.report.schema import SCHEMA_ID
from sample_reports import GRID, make_report


# ----------------------------------------------------------------------------- schema

def test_synthetic_report_is_valid_and_has_an_abstaining_eta():
    r = make_report()
    validate_report(r)
    curve = r["poisons"]["miue"]["certificate"]["curve"]
    assert any(p["learnability"] is None for p in curve)
    assert any(p["learnability"] is not None for p in curve)


def test_optional_sections_may_be_absent_and_nullable_fields_null():
    r = make_report()
    for key in ("certificate", "sal_ud", "mutual_information", "recovery"):
        del r["poisons"]["miue"][key]
    del r["poisons"]["miue"]["empirical"]["defenses"]
    del r["timings"]
    r["poisons"]["none"]["sal_ud"].update(ud=None, ud_null_reason="the clean model did not converge")
    r["poisons"]["none"]["extra_field"] = {"anything": [1, 2]}
    validate_report(r)


@pytest.mark.parametrize("mutate, path", [
    (lambda r: r["poisons"]["miue"]["certificate"].pop("sigma"), "poisons.miue.certificate.sigma"),
    (lambda r: r["poisons"]["miue"]["certificate"]["curve"][1].update(learnability="0.3"),
     "poisons.miue.certificate.curve[1].learnability"),
    (lambda r: r["poisons"]["miue"]["empirical"].update(protected_accuracy=1.5),
     "poisons.miue.empirical.protected_accuracy"),
    (lambda r: r["poisons"]["miue"]["sal_ud"].update(ud=None), "poisons.miue.sal_ud.ud_null_reason"),
    (lambda r: r["poisons"]["miue"]["budget"].update(norm="l3"), "poisons.miue.budget.norm"),
    (lambda r: r["dataset"].update(n_test="many"), "dataset.n_test"),
    (lambda r: r.pop("seed"), "seed"),
    (lambda r: r["poisons"]["miue"]["recovery"]["pgd"]["curve"][0].pop("accuracy"),
     "poisons.miue.recovery.pgd.curve[0].accuracy"),
])
def test_schema_rejects_with_the_path(mutate, path):
    r = make_report()
    mutate(r)
    with pytest.raises(UserError) as e:
        validate_report(r)
    msg = str(e.value)
    assert path in msg
    assert "\n" not in msg


def test_schema_rejects_a_foreign_document_and_non_finite_numbers():
    with pytest.raises(UserError, match="schema"):
        validate_report({"schema": "something/else", "poisons": {}})
    r = make_report()
    r["poisons"]["miue"]["mutual_information"]["gap"] = float("nan")
    with pytest.raises(UserError, match=r"poisons\.miue\.mutual_information\.gap"):
        validate_report(r)


# ----------------------------------------------------------------------------- content

def _section(doc: Section, title: str, within: str | None = None) -> Section:
    if within is not None:
        doc = _section(doc, within)
    return next(b for _, b in walk(doc) if isinstance(b, Section) and b.title == title)


def _tables(section: Section) -> list[Table]:
    return [b for _, b in walk(section) if isinstance(b, Table)]


def test_content_holds_the_summary_rows_and_derived_numbers():
    r = make_report()
    doc = build_document(r)
    assert doc.title == "Unlearnable-examples certification report: none, miue"
    [summary] = _tables(_section(doc, "Summary"))
    assert summary.header == ["poison", "clean acc", "protected acc", "peak protected acc", "jpeg acc",
                              "grayscale acc", "certified @ η/σ=0.1 (drop below none)",
                              "certified @ η/σ=0.5 (drop below none)", "max certified η", "UD", "MI gap",
                              "best recovered acc"]
    none, miue = summary.rows
    assert none[:6] == ["none", "0.535", "0.535", "0.565", "0.635", "0.585"]
    assert miue[:6] == ["miue", "0.535", "0.210", "0.240", "0.310", "0.260"]
    assert miue[9:] == ["0.420", "0.45", "0.240 (pgd, η/σ=1.5)"]
    # the certified cells quote the drop below the clean control's at the same η/σ (clean minus poison)
    at = {p["eta_over_sigma"]: p["learnability"] for p in r["poisons"]["miue"]["certificate"]["curve"]}
    ctl = {p["eta_over_sigma"]: p["learnability"] for p in r["poisons"]["none"]["certificate"]["curve"]}
    assert miue[6] == f"{at[0.1]:.3f} (drop {ctl[0.1] - at[0.1]:+.3f})"

    [defenses] = _tables(_section(doc, "Defenses", within="Poison: miue"))
    assert defenses.rows == [["jpeg", "0.310", "0.330", "+0.100"], ["grayscale", "0.260", "0.270", "+0.050"]]
    certificate = _tables(_section(doc, "Certificate", within="Poison: miue"))[0]
    assert certificate.header[-3:] == ["certified upper (none)", "drop", "lower bound"]
    assert [row[1] for row in certificate.rows] == [f"{g:g}" for g in GRID]


def _md_tables(md: str) -> list[list[list[str]]]:
    """Header and rows of every Markdown table, unescaped (cells hold no '|')."""
    tables: list = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| --- "):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append([re.sub(r"\\(.)", r"\1", c) for c in line[2:-2].split(" | ")])
        previous = line
    return tables


def _html_tables(page: str) -> list[list[list[str]]]:
    return [[[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)]
             for tr in re.findall(r"<tr>(.*?)</tr>", table)]
            for table in re.findall(r"<table>(.*?)</table>", page, flags=re.S)]


def test_markdown_and_html_show_the_content_tables_row_for_row():
    r = make_report()
    expected = [[t.header] + t.rows for t in _tables(build_document(r))]
    assert len(expected) > 5
    assert _md_tables(build_markdown(r)) == expected
    assert _html_tables(build_html(r, {})) == expected


# ----------------------------------------------------------------------------- writing and rendering

EXPECTED_FIGURES = {"defenses.png", "ud.png", "certificate-none.png", "certificate-miue.png", "history-miue.png",
                    "sal-miue.png", "recovery-miue.png", "sal-none.png", "recovery-none.png", "history-none.png"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = make_report()
    # numpy values are accepted and written as plain JSON
    r["poisons"]["miue"]["empirical"]["protected_accuracy"] = np.float32(0.25)
    r["dataset"]["n_train"] = np.int64(5000)
    write_report(r, out)
    return out


def test_write_report_writes_json_md_html_and_figures(written):
    doc = json.loads((written / "report.json").read_text())
    assert doc["schema"] == SCHEMA_ID
    assert doc["poisons"]["miue"]["empirical"]["protected_accuracy"] == pytest.approx(0.25)
    assert doc["dataset"]["n_train"] == 5000
    figs = {p.name for p in (written / "figures").glob("*.png")}
    assert figs == EXPECTED_FIGURES
    for name in figs:
        assert (written / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (written / "report.md").read_text()
    assert "certify run --poison miue --samples 200 --sigma 0.02 --seed 0" in md
    assert "## Summary" in md
    assert "certified @ η/σ=0.1 (drop below none)" in md and "certified @ η/σ=0.5 (drop below none)" in md
    assert "abstains" in md
    assert "What is guaranteed" in md and "What is not guaranteed" in md
    assert "per-η coverage" in md
    assert "41.3" in md and "27.9" in md  # ‖θ̂‖₂ and the independent-model distance for scale
    assert "jpeg acc" in md and "MI gap" in md and "best recovered acc" in md and "UD" in md
    for name in figs:
        assert f"(figures/{name})" in md

    html = (written / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") == len(figs)
    assert 'src="figures/' not in html and "<link" not in html  # self-contained


def test_summary_drops_columns_without_data(tmp_path):
    r = make_report()
    for sec in r["poisons"].values():
        for key in ("sal_ud", "mutual_information", "recovery"):
            del sec[key]
        del sec["empirical"]["defenses"]
    write_report(r, tmp_path)
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| poison"))
    assert "UD" not in header and "MI gap" not in header and "recovered" not in header and "jpeg" not in header
    assert "certified @" in header
    figs = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert figs == {"certificate-none.png", "certificate-miue.png", "history-none.png", "history-miue.png"}


def test_html_and_markdown_escape_user_strings(tmp_path):
    evil = "<script>alert(1)</script>"
    r = make_report(dataset_name=evil, poisons=("none", evil))
    r["command"] = f"certify run --poison '{evil}'"
    write_report(r, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = (tmp_path / "report.md").read_text()
    outside_code = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", md, flags=re.S))  # code shows text literally
    assert "<script>" not in outside_code
    # figure files get a safe name
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) for p in (tmp_path / "figures").iterdir())


def test_render_reproduces_the_same_outputs_from_the_json(written, tmp_path):
    md_before = (written / "report.md").read_text()
    html_before = (written / "report.html").read_text()
    fig_before = (written / "figures" / "certificate-miue.png").read_bytes()
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    (copy_dir / "report.json").write_bytes((written / "report.json").read_bytes())
    render(copy_dir / "report.json")
    assert (copy_dir / "report.md").read_text() == md_before
    assert (copy_dir / "report.html").read_text() == html_before
    assert (copy_dir / "figures" / "certificate-miue.png").read_bytes() == fig_before


def test_write_report_rejects_an_invalid_report_before_writing(tmp_path):
    r = make_report()
    del r["poisons"]["miue"]["budget"]
    with pytest.raises(UserError, match=r"poisons\.miue\.budget"):
        write_report(r, tmp_path / "out")
    assert not (tmp_path / "out" / "report.json").exists()


# ----------------------------------------------------------------------------- load_report

def test_load_report_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_report(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"name": "package.json"}))
    with pytest.raises(UserError, match="not a ue-certify report"):
        load_report(foreign)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "ue-certify/report/v0"}))
    with pytest.raises(UserError, match="schema"):
        load_report(wrong)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(UserError, match="binary.json"):
        load_report(binary)
    with pytest.raises(UserError, match="directory"):
        load_report(tmp_path)
    invalid = tmp_path / "invalid.json"
    r = make_report()
    r["poisons"]["miue"]["certificate"]["q"] = 2
    invalid.write_text(json.dumps(r))
    with pytest.raises(UserError, match=r"invalid\.json: poisons\.miue\.certificate\.q"):
        load_report(invalid)


def test_load_report_round_trip(written):
    doc = load_report(written / "report.json")
    assert set(doc["poisons"]) == {"none", "miue"}
    assert doc == json.loads((written / "report.json").read_text())


# ----------------------------------------------------------------------------- the literature comparison

def _with_comparison(poisons=("none", "miue", "em", "random")) -> dict:
    from certify.scores.comparison import comparison

    r = make_report(poisons=poisons)
    for i, (name, sec) in enumerate(r["poisons"].items()):
        if name != "none":
            sec["empirical"]["protected_accuracy"] = 0.1 + 0.1 * i
            sec["mutual_information"]["gap"] = 0.5 - 0.1 * i
        sec["covariance"] = {"score": 1.0 if name == "none" else 1.5 - 0.1 * i, "score_null_reason": None,
                             "clean": 0.4, "protected": 0.4, "images": 1000}
        sec["sal_ud"]["defended"] = {"jpeg": {"ud": 0.5 + 0.1 * i, "ud_null_reason": None}}
    r["comparison"] = comparison(r["poisons"])
    return r


def test_comparison_table_near_the_top_with_correlations():
    r = _with_comparison()
    validate_report(r)
    doc = build_document(r)
    titles = [b.title for b in doc.children if isinstance(b, Section)]
    assert titles.index("Comparison with the literature") == titles.index("Summary") + 1
    table, corr = _tables(_section(doc, "Comparison with the literature"))
    assert table.header == ["poison", "protected acc", "acc drop", "certified @ η/σ=0.1", "certified drop below none", "UD",
                            "MI gap", "covariance score", "within / total", "jpeg acc", "grayscale acc", "UD jpeg"]
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == ["none", "miue", "em", "random"]
    at = {p["eta_over_sigma"]: p["learnability"] for p in r["poisons"]["em"]["certificate"]["curve"]}
    ctl = {p["eta_over_sigma"]: p["learnability"] for p in r["poisons"]["none"]["certificate"]["curve"]}
    assert rows["em"] == ["em", "0.300", "0.200", f"{at[0.1]:.3f}", f"{ctl[0.1] - at[0.1]:+.3f}", "0.420", "0.3",
                          "1.300", "—", "0.400", "0.350", "0.700"]
    assert rows["none"][2] == "0.000" and rows["none"][4] == "—"
    # MI gap and covariance score both fall as the drop falls: rho = +1 over the three poisons
    # three points: no bootstrap interval (a tenth of the resamples are constant), the exact permutation p 1/3
    assert corr.rows[0][:3] == ["MI gap vs accuracy drop", "+1.000", "—"] and corr.rows[0][4:6] == ["0.333 (exact)", "3"]
    assert "constant side" in corr.rows[0][6]
    assert corr.rows[1][:2] == ["covariance score vs accuracy drop", "+1.000"]
    assert _md_tables(build_markdown(r)) == _html_tables(build_html(r, {})) == [
        [t.header] + t.rows for t in _tables(doc)]


def test_comparison_of_one_poison_and_without_scores_or_defenses(tmp_path):
    from certify.scores.comparison import comparison

    r = make_report()
    for sec in r["poisons"].values():
        for key in ("sal_ud", "mutual_information", "certificate"):
            del sec[key]
        del sec["empirical"]["defenses"]
    r["comparison"] = comparison(r["poisons"])
    write_report(r, tmp_path)
    doc = build_document(load_report(tmp_path / "report.json"))
    table, corr = _tables(_section(doc, "Comparison with the literature"))
    assert table.rows[1] == ["miue", "0.210", "0.325", "—", "—", "—", "—", "—", "—", "—", "—"]
    assert [row[-1] for row in corr.rows] == ["needs 3 poisons", "needs 3 poisons"]
    assert "## Comparison with the literature" in (tmp_path / "report.md").read_text()


def test_schema_checks_the_comparison():
    r = _with_comparison()
    r["comparison"]["rows"][1]["protected_accuracy"] = 1.5
    with pytest.raises(UserError, match=r"comparison\.rows\[1\]\.protected_accuracy"):
        validate_report(r)
    r = _with_comparison()
    r["comparison"]["correlations"]["mi_gap"].update(rho=None, reason=None)
    with pytest.raises(UserError, match=r"comparison\.correlations\.mi_gap\.reason"):
        validate_report(r)


# ----------------------------------------------------------------------------- replicate seeds

def _paragraphs(section: Section) -> list[str]:
    return ["".join(p if isinstance(p, str) else p.text for p in b.parts) for _, b in walk(section)
            if isinstance(b, Paragraph)]


def _bullet(section: Section, label: str) -> str:
    """The text after the label of the bullet that starts with `label`."""
    return next("".join(p if isinstance(p, str) else p.text for p in item[1:]) for _, b in walk(section)
                if isinstance(b, Bullets) for item in b.items if item[0] == Strong(label))


def test_spread_writes_a_half_width_only_for_a_centred_interval():
    t, cp = {"interval_method": "student-t"}, {"interval_method": "clopper-pearson"}
    assert spread(t, 0.239, [0.208, 0.270]) == "0.239 ± 0.031"
    assert spread(t, 0.01, [0.0, 0.04]) == "0.010 [0.000, 0.040]"  # clipped at 0: no honest ±
    assert spread(cp, 0.21, [0.185, 0.237]) == "0.210 [0.185, 0.237]"
    assert spread({}, 0.21, None) == "0.210" and spread(t, None, [0.1, 0.2]) is None  # older reports, no value


def test_three_seeds_show_means_with_half_widths_wherever_an_accuracy_is_quoted():
    r = make_report(seeds=3)
    for name, sec in r["poisons"].items():
        sec["verdict"] = {"level": "strong", "reasons": [f"best attack over 3 seeds on {name}"]}
    validate_report(r)
    emp = r["poisons"]["miue"]["empirical"]
    mean, (low, high) = emp["protected_accuracy"], emp["protected_interval"]
    half = f"{high - mean:.3f}"
    assert half == f"{mean - low:.3f}" == "0.037"  # t(0.975, 2) · 0.015 / √3
    doc = build_document(r)
    [summary] = _tables(_section(doc, "Summary"))
    miue = summary.rows[1]
    assert miue[2] == f"0.210 ± {half}"
    jpeg = emp["defenses"]["jpeg"]
    assert miue[4] == f"{jpeg['accuracy']:.3f} ± {jpeg['interval'][1] - jpeg['accuracy']:.3f}" == "0.310 ± 0.056"
    rec = r["poisons"]["miue"]["recovery"]["pgd"]
    assert miue[-1] == f"{rec['best_accuracy']:.3f} ± {rec['best_interval'][1] - rec['best_accuracy']:.3f} (pgd)"
    assert "mean over 3 seeds ± the half-width of its 95 % Student-t interval" in _paragraphs(_section(doc, "Summary"))[0]

    poison = _section(doc, "Poison: miue")
    assert _bullet(poison, "Protected model test accuracy") == (
        f": 0.210 ± {half} (95 % Student-t interval over 3 seeds, [{low:.3f}, {high:.3f}]) at the end of training, "
        f"{emp['peak_protected_accuracy']:.3f} ± {half} at its peak")
    [defenses] = _tables(_section(doc, "Defenses", within="Poison: miue"))
    assert defenses.rows[0][:3] == ["jpeg", "0.310 ± 0.056", "0.330 ± 0.056"]
    assert f"Best recovered accuracy: {miue[-1][:-6]}, the mean over the 3 seeds" in \
        " ".join(_paragraphs(_section(doc, "Recovery attack", within="Poison: miue")))

    verdict = doc.children[0]
    assert verdict.title == "Verdict (over 3 seeds)"
    assert _paragraphs(verdict)[0] == ("Judged over 3 seeds, on the upper end of the 95 % interval of the attacker's "
                                       "best accuracy.")
    md = build_markdown(r)
    assert "## Verdict (over 3 seeds)" in md and "best attack over 3 seeds on miue" in md
    assert f"0.210 ± {half}" in md and "over 3 seeds" in md
    assert _md_tables(md) == _html_tables(build_html(r, {})) == [[t.header] + t.rows for t in _tables(doc)]


def test_the_replicates_table_lists_every_seed():
    r = make_report(seeds=3)
    doc = build_document(r)
    [table] = _tables(_section(doc, "Replicate seeds", within="Poison: miue"))
    assert table.header == ["seed", "clean acc", "protected acc", "jpeg acc", "grayscale acc",
                            "certified @ η/σ=0.1", "best recovered (pgd)"]
    reps = r["poisons"]["miue"]["replicates"]
    assert [row[0] for row in table.rows] == ["0", "1", "2"] == [str(s) for s in r["seeds"]]
    assert [row[2] for row in table.rows] == ["0.210", "0.225", "0.195"]
    assert [row[3] for row in table.rows] == [f"{rep['defenses']['jpeg']:.3f}" for rep in reps]
    assert [row[5] for row in table.rows] == [f"{rep['certified']['0.1']:.3f}" for rep in reps]
    assert [row[6] for row in table.rows] == [f"{rep['recovery']['pgd']:.3f}" for rep in reps]
    # the summary's certified value is the largest seed's
    assert _tables(_section(doc, "Summary"))[0].rows[1][6].startswith(table.rows[0][5])
    assert "at α/3 = 0.00333" in _paragraphs(_section(doc, "Replicate seeds", within="Poison: miue"))[0]


def test_three_seeds_say_what_the_certified_value_guarantees():
    doc = build_document(make_report(seeds=3))
    [guaranteed, not_guaranteed] = [p for p in _paragraphs(_section(doc, "Certificate", within="Poison: miue"))
                                    if p.startswith("What is")]
    assert "within ℓ2 distance η of any one of the 3 surrogates θ̂" in guaranteed
    assert ("each seed's bound was computed at level α/3 = 0.00333, and the certified value shown is the largest of "
            "the 3") in guaranteed
    assert ("with probability at least 0.99 all 3 bounds hold at once, and the value shown holds around every one of "
            "the 3 surrogates together") in guaranteed
    assert "would need α/(3·6) per row" in guaranteed
    assert "It concerns the surrogates θ̂, not the protected models" in not_guaranteed
    assert "3 replicates, each bound at α/3 = 0.00333" in _bullet(doc, "Confidence")


def test_one_seed_shows_the_clopper_pearson_interval_and_todays_certificate():
    from statsmodels.stats.proportion import proportion_confint

    r = make_report(seeds=1)
    doc = build_document(r)
    low, high = proportion_confint(210, 1000, alpha=0.05, method="beta")
    assert r["poisons"]["miue"]["empirical"]["protected_interval"] == pytest.approx([low, high])
    assert _bullet(_section(doc, "Poison: miue"), "Protected model test accuracy").startswith(
        f": 0.210 (95 % Clopper-Pearson interval over the 1000 test images: [{low:.3f}, {high:.3f}]; one seed)")
    [summary] = _tables(_section(doc, "Summary"))
    assert summary.rows[1][2] == f"0.210 [{low:.3f}, {high:.3f}]"
    assert summary.rows[1][-1].endswith(" (pgd, η/σ=1.5)")  # one seed's best lies at one η
    assert "±" not in build_markdown(r)
    assert not any(isinstance(b, Section) and b.title == "Replicate seeds" for _, b in walk(doc))
    # one seed certifies exactly as before replicates
    old = build_document(make_report())
    assert _section(doc, "Certificate", within="Poison: miue") == _section(old, "Certificate", within="Poison: miue")


def test_a_report_from_before_seeds_renders_as_it_did():
    r = make_report()
    md = build_markdown(r)
    assert "±" not in md and "Clopper-Pearson" not in md and "seeds" not in md
    assert "replicates.png" not in {spec.filename for spec in plan(r)}
    assert _tables(_section(build_document(r), "Summary"))[0].rows[1][2] == "0.210"


def test_the_replicates_figure_is_written_and_embedded(tmp_path):
    for k in (1, 3):
        r = make_report(seeds=k)
        for sec in r["poisons"].values():  # fewer figures to draw
            for key in ("certificate", "sal_ud", "mutual_information", "recovery"):
                del sec[key]
        write_report(r, tmp_path / str(k))
        png = (tmp_path / str(k) / "figures" / "replicates.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        [spec] = [s for s in plan(r) if s.kind == "replicates"]
        assert f"![{spec.caption}](figures/replicates.png)" in (tmp_path / str(k) / "report.md").read_text()
        page = (tmp_path / str(k) / "report.html").read_text()
        assert f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(spec.caption)}">' \
            in page
        assert ("Student-t interval over the 3 seeds" if k == 3 else "Clopper-Pearson interval over the test images") \
            in spec.caption


def test_each_victims_training_set_accuracy_is_shown_where_recorded():
    r = make_report()
    assert "Training-set accuracy" not in build_markdown(r)  # reports before it: no line
    r["poisons"]["miue"]["empirical"].update(clean_train_accuracy=0.515, protected_train_accuracy=0.934)
    validate_report(r)
    md = build_markdown(r)
    assert "**Training-set accuracy**: clean model 0.515, protected model 0.934" in md
