"""The run report: Markdown a person reads, the same as self-contained HTML.

:func:`build_report` is pure: it takes what the stages wrote (as dicts) and
returns Markdown whose figures are relative links to PNGs next to it.
:func:`to_html` inlines those PNGs, so the HTML file stands alone;
:func:`inline_figures` embeds the figures (scaled down) for places that cannot
show local files (a Prefect artifact); :func:`without_figures` drops them.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transferpilot.balance import IMBALANCED
from transferpilot.decide import candidate_input

#: Section titles, in order; tests and readers can rely on them.
SECTIONS = (
    "Data",
    "Profile",
    "Decision",
    "Training",
    "Metrics",
    "Mistakes",
    "Label issues",
    "Predictor",
)

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_section(validation: Mapping[str, Any]) -> str:
    counts = validation.get("counts", {})
    splits = [s for s in ("train", "val", "test") if counts.get(s)]
    classes = validation.get("classes", [])
    rows = [[c, *(counts[s].get(c, 0) for s in splits)] for c in classes]
    rows.append(["**total**", *(sum(counts[s].values()) for s in splits)])
    totals = validation.get("totals", {})
    findings = validation.get("findings", [])
    bad = [f for f in findings if f.get("kind") not in ("converted",)]
    text = [
        f"Source `{validation.get('source')}` ({validation.get('layout')}): "
        f"{totals.get('files_seen', '?')} files seen, {totals.get('usable', '?')} usable, "
        f"{len(classes)} classes.",
        "",
        _table(["class", *splits], rows),
        "",
    ]
    by_kind = validation.get("findings_by_kind", {})
    if by_kind:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(by_kind.items()))
        text.append(f"Findings by kind — {kinds}.")
    if bad:
        text += ["", "Files skipped, dropped or flagged (first 20):", ""]
        text.append(
            _table(
                ["file", "kind", "reason", "action"],
                [
                    [f.get("path"), f.get("kind"), f.get("reason"), f.get("action")]
                    for f in bad[:20]
                ],
            )
        )
    return "\n".join(text)


def _profile_section(profile: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    size, sim = profile.get("size", {}), profile.get("similarity", {})
    per_class = size.get("images_per_class", {})
    text = [
        f"Model `{profile.get('model')}`. {size.get('n_train')} training images in "
        f"{size.get('n_classes')} classes (median {_fmt(per_class.get('median'), 1)} per class, "
        f"imbalance {_fmt(size.get('imbalance'), 2)}).",
        "",
        f"Similarity to ImageNet **{_fmt(sim.get('score'), 2)}** = head certainty "
        f"{_fmt(sim.get('certainty'), 2)} x feature overlap {_fmt(sim.get('overlap'), 2)} "
        f"({sim.get('formula', '')}).",
    ]
    for key, alt in (("similarity", "similarity by depth"), ("probes", "linear probe per layer")):
        if key in figures:
            text += ["", f"![{alt}]({figures[key]})"]
    ranking = profile.get("backbones")
    if ranking:
        text += ["", "Backbones measured (`model.name: auto`):", "", _backbones_table(ranking)]
    return "\n".join(text)


def _minutes(value: Any) -> str:
    return "—" if value is None else f"{value:.1f} min"


def _backbones_table(ranking: Mapping[str, Any]) -> str:
    """Every candidate backbone: its scores on the sample, its cost here, chosen or why not."""
    rows = []
    for s in ranking.get("scores", []):
        probe = f"{s['probe_accuracy']:.3f} ± {s['probe_std']:.3f} ({s['folds']}-fold)"
        cost = None
        if s.get("extract_minutes") is not None:
            cost = s["extract_minutes"] + (s.get("finetune_minutes") or 0.0)
        rows.append(
            [
                f"**{s['model']}**" if s.get("chosen") else s["model"],
                f"{s['input_size']} px",
                s["layer"],
                probe,
                s["knn_accuracy"],
                s["logme"],
                f"{_minutes(s.get('extract_minutes'))} + {_minutes(s.get('finetune_minutes'))}"
                if cost is not None
                else "—",
                f"{s['seconds']:.0f} s",
                s.get("verdict", ""),
            ]
        )
    header = [
        "backbone",
        "input",
        "best layer",
        "linear probe",
        "k-NN",
        "LogME",
        "cost: extract + fine-tune",
        "measured in",
        "verdict",
    ]
    note = (
        f"Sample: {ranking.get('sample_images')} training images (stratified); "
        f"selection took {ranking.get('seconds', 0.0):.0f} s."
    )
    return _table(header, rows) + "\n\n" + note


def _decision_section(decision: Mapping[str, Any]) -> str:
    layer = f" on `{decision['layer']}`" if decision.get("layer") else ""
    lines = [
        f"Quadrant **{decision.get('quadrant')}** → **{decision.get('strategy')}**{layer}"
        + (" (set by hand in params.yaml)" if decision.get("overridden") else "")
        + ".",
        "",
        f"> {decision.get('reason', '')}",
    ]
    candidates = decision.get("candidates") or []
    if candidates:
        lines += ["", _candidates_table(candidates)]
    baseline, gain = decision.get("baseline_score"), decision.get("transfer_gain")
    if baseline is not None:
        lines += [
            "",
            f"No-transfer baseline (raw pixels): **{baseline:.3f}** held-in CV accuracy"
            + (f"; transfer gain of the choice: **{gain:+.3f}**." if gain is not None else "."),
        ]
    return "\n".join(lines)


def _candidates_table(candidates: Sequence[Mapping[str, Any]]) -> str:
    """Every candidate the decision weighed: score on held-in data ± spread, cost, verdict."""
    rows = []
    for c in candidates:
        score = "—" if c.get("score") is None else f"{c['score']:.3f}"
        trialled = c.get("folds") == 1  # a trial's one held-in score; k-fold CV has k >= 2
        if c.get("spread") is not None and c.get("folds"):
            score += f" ± {c['spread']:.3f} " + ("(trial)" if trialled else f"({c['folds']}-fold)")
        minutes = "—" if c.get("minutes") is None else f"{c['minutes']:.1f} min"
        rows.append([c.get("strategy"), candidate_input(c), score, minutes, c.get("verdict", "")])
    return _table(["strategy", "input", "held-in accuracy", "cost", "verdict"], rows)


def _training_section(train: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    rows = [
        [k, _fmt(v) if not isinstance(v, list | dict) else ", ".join(map(str, v)) or "—"]
        for k, v in train.items()
        if k not in ("groups",)
    ]
    text = [_table(["setting / result", "value"], rows)]
    if "curves" in figures:
        text += ["", f"![training curves]({figures['curves']})"]
    return "\n".join(text)


def _metrics_section(
    metrics: Mapping[str, Any],
    per_class: Mapping[str, Any],
    figures: Mapping[str, str],
    note: str,
) -> str:
    splits = [s for s in ("val", "test") if s in metrics]
    keys = list(metrics[splits[0]]) if splits else []
    text = [_table(["metric", *splits], [[k, *(metrics[s][k] for s in splits)] for k in keys])]
    if note:
        text += ["", note]
    for split in splits:
        rows = [
            [r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
            for r in per_class.get(split, [])
        ]
        text += [
            "",
            f"Per class ({split}):",
            "",
            _table(["class", "precision", "recall", "F1", "support"], rows),
        ]
        if f"confusion_{split}" in figures:
            text += ["", f"![confusion matrix, {split}]({figures[f'confusion_{split}']})"]
    return "\n".join(text)


def _mistakes_section(
    mistakes: Sequence[Mapping[str, Any]], figures: Mapping[str, str], explained: str = ""
) -> str:
    if not mistakes:
        return "No mistakes on the evaluated images."
    rows = [[m["path"], m["actual"], m["predicted"], m["confidence"]] for m in mistakes]
    text = [_table(["image", "actual", "predicted", "probability"], rows)]
    if "mistakes" in figures:
        text += ["", f"![most confident mistakes]({figures['mistakes']})"]
    if explained:
        text += ["", explained]
    return "\n".join(text)


#: Label issues listed in the report (``reports/label_issues.csv`` has them all).
SHOWN_ISSUES = 12


def _label_issues_section(
    issues: Mapping[str, Any] | None, train: Mapping[str, Any], figures: Mapping[str, str]
) -> str:
    if not issues:
        return "Not looked for (`train.label_issues: false`)."
    if issues.get("skipped"):
        return f"Not looked for: {issues['skipped']}."
    found, checked = issues["issues"], issues["checked"]
    text = [
        f"**{len(found)}** of {checked} training images ({len(found) / max(checked, 1):.1%}) "
        "look mislabelled: confident learning (cleanlab) on the out-of-fold probabilities of "
        f"{issues['source']}, each from a fit that did not see the image. They are suspects "
        "for a person to look at, most suspect first, all in `reports/label_issues.csv`."
    ]
    text += [f"- **Note:** {w}" for w in issues.get("warnings", [])]
    if "label_issues_dropped" in train:
        text += [
            "",
            f"Trained without them (`train.drop_label_issues`): val accuracy "
            f"{_fmt(train.get('val_accuracy_with_label_issues'))} with them, "
            f"{_fmt(train.get('val_accuracy'))} without.",
        ]
    if found:
        rows = [
            [i["path"], i["given"], i["suggested"], i["given_prob"], i["suggested_prob"]]
            for i in found[:SHOWN_ISSUES]
        ]
        header = ["image", "labelled", "looks like", "p(labelled)", "p(looks like)"]
        text += ["", _table(header, rows)]
    if "label_issues" in figures:
        text += ["", f"![suspected label issues]({figures['label_issues']})"]
    return "\n".join(text)


def _predictor_section(predictor: Mapping[str, Any]) -> str:
    if not predictor:
        return "No predictor was exported."
    return "\n".join(
        [
            f"`{predictor['path']}` (ONNX: backbone + head, preprocessing and class names inside).",
            f"Checked against this evaluation on {predictor['checked']} images: top-1 agreement "
            f"{_fmt(predictor['agreement'])}, largest probability difference "
            f"{predictor['max_abs_diff']:.2g}.",
            "",
            f"    transferpilot predict IMAGE... --model {predictor['path']}",
        ]
    )


def build_report(
    *,
    validation: Mapping[str, Any],
    profile: Mapping[str, Any],
    decision: Mapping[str, Any],
    train: Mapping[str, Any],
    metrics: Mapping[str, Any],
    per_class: Mapping[str, Any],
    mistakes: Sequence[Mapping[str, Any]],
    predictor: Mapping[str, Any],
    figures: Mapping[str, str],
    probability_note: str = "",
    label_issues: Mapping[str, Any] | None = None,
    explained: str = "",
    imbalance: float = 1.0,
) -> str:
    """The report as Markdown; ``figures`` maps figure keys to PNG paths relative to it;
    ``probability_note``: what the strategy says of its probabilities (under the metrics);
    ``explained``: how the mistakes' maps were made, or why there are none;
    ``imbalance``: the training split's largest class over its smallest."""
    split = "test" if "test" in metrics else "val"
    headline = _headline(decision, split, metrics.get(split, {}), imbalance)
    bodies = {
        "Data": _data_section(validation),
        "Profile": _profile_section(profile, figures),
        "Decision": _decision_section(decision),
        "Training": _training_section(train, figures),
        "Metrics": _metrics_section(metrics, per_class, figures, probability_note),
        "Mistakes": _mistakes_section(mistakes, figures, explained),
        "Label issues": _label_issues_section(label_issues, train, figures),
        "Predictor": _predictor_section(predictor),
    }
    parts = ["# transferpilot report", "", headline]
    for title in SECTIONS:
        parts += ["", f"## {title}", "", bodies[title]]
    return "\n".join(parts) + "\n"


def _headline(
    decision: Mapping[str, Any], split: str, head: Mapping[str, Any], imbalance: float
) -> str:
    """The strategy and its scores with their 95 % intervals; on an imbalanced set balanced
    accuracy and macro-F1 lead, and the report says why; on few images, what one image
    is worth."""
    chosen = f"**{decision.get('strategy')}**" + (
        f" on `{decision['layer']}`" if decision.get("layer") else ""
    )
    accuracy, balanced = (f"**{_fmt(head.get(k))}**{_interval(head, k)}" for k in
                          ("accuracy", "balanced_accuracy"))  # fmt: skip
    f1, n = _fmt(head.get("macro_f1")), int(head.get("images", 0) or 0)
    if imbalance <= IMBALANCED:
        text = (
            f"{chosen}: {split} accuracy {accuracy}, balanced accuracy "
            f"{balanced.replace('**', '')}, macro-F1 {f1} on {n} images."
        )
    else:
        text = (
            f"{chosen}: {split} balanced accuracy {balanced}, macro-F1 **{f1}**, accuracy "
            f"{accuracy.replace('**', '')} on {n} images. The classes are imbalanced (the "
            f"largest has {imbalance:.1f}x the training images of the smallest), so balanced "
            "accuracy (the mean of the per-class recalls) and macro-F1 lead: plain accuracy "
            "rewards answering the largest class."
        )
    if 0 < n < FEW_IMAGES:
        text += (
            f" On {n} images one answer more or less right moves accuracy by "
            f"{1 / n:.3f}: read the score as its interval, not its digits."
        )
    return text


#: Below this many evaluated images the headline says what one image is worth.
FEW_IMAGES = 100


def _interval(head: Mapping[str, Any], key: str) -> str:
    low, high = head.get(f"{key}_low"), head.get(f"{key}_high")
    if low is None or high is None:
        return ""
    return f" (95 % interval {_fmt(low)} to {_fmt(high)})"


def without_figures(markdown_text: str) -> str:
    """The report with each figure replaced by its caption and file name."""
    return _IMAGE.sub(lambda m: f"*(figure: {m.group(1)} — `{m.group(2)}`)*", markdown_text)


def _png(path: Path, max_px: int | None) -> bytes:
    """The PNG's bytes, scaled down (aspect kept) so neither side exceeds ``max_px``."""
    data = path.read_bytes()
    if max_px is None:
        return data
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= max_px:
            return data
        image.thumbnail((max_px, max_px))
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
        return out.getvalue()


def inline_figures(markdown_text: str, base: Path, max_px: int | None = None) -> str:
    """The report with figures under ``base`` as PNG data URIs (``max_px``: scaled down to
    fit), so it stands alone: a Prefect artifact shows them, and no local path is left."""

    def inline(match: re.Match[str]) -> str:
        alt, src = match.group(1), match.group(2)
        path = base / src
        if not path.is_file():
            return f"*(missing figure: {src})*"
        data = base64.b64encode(_png(path, max_px)).decode("ascii")
        return f"![{alt}](data:image/png;base64,{data})"

    return _IMAGE.sub(inline, markdown_text)


def to_html(markdown_text: str, base: Path) -> str:
    """A standalone HTML page: figures under ``base`` are inlined as data URIs."""
    import markdown

    body = markdown.markdown(inline_figures(markdown_text, base), extensions=["tables"])
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "line-height:1.5;color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}"
        "img{max-width:100%;border:1px solid #eee}blockquote{color:#444;border-left:4px solid #ddd;"
        "margin:0;padding:.2em 1em}code{background:#f4f4f4;padding:0 .2em}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape('transferpilot report')}</title><style>{style}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
