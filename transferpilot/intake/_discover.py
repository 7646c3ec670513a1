"""Finding the candidate images of a dataset: ImageFolder layouts or a CSV manifest."""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

from transferpilot.errors import DataError
from transferpilot.intake._types import SPLIT_ALIASES, Candidate, Finding


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


def walk_class(
    class_dir: Path, label: str, split: str | None, root: Path
) -> tuple[list[Candidate], list[Finding]]:
    """Every file under ``class_dir`` (nested folders too), following links without looping."""
    candidates: list[Candidate] = []
    findings: list[Finding] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        here = Path(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            findings.append(
                Finding(_show(here, root), "symlink_loop", "folder link loops back", "skipped")
            )
            continue
        seen_dirs.add(real)
        for name in sorted(dirnames):
            if _is_hidden(name):
                findings.append(
                    Finding(_show(here / name, root), "hidden", "hidden folder", "skipped")
                )
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            path = here / name
            if _is_hidden(name):
                findings.append(Finding(_show(path, root), "hidden", "hidden file", "skipped"))
                continue
            candidates.append(Candidate(path, label, split, _show(path, root)))
    return candidates, findings


def _show(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _class_folders(
    root: Path, base: Path, split: str | None
) -> tuple[list[Candidate], list[Finding], list[str]]:
    candidates: list[Candidate] = []
    findings: list[Finding] = []
    classes = []
    for entry in sorted(base.iterdir()):
        if _is_hidden(entry.name):
            findings.append(Finding(_show(entry, root), "hidden", "hidden entry", "skipped"))
        elif entry.is_dir():
            classes.append(entry.name)
            found, notes = walk_class(entry, entry.name, split, root)
            candidates += found
            findings += notes
            if not found:
                findings.append(
                    Finding(
                        _show(entry, root),
                        "empty_class",
                        "class folder has no files",
                        "class ignored",
                    )
                )
        else:
            findings.append(
                Finding(
                    _show(entry, root), "stray_file", "file outside any class folder", "skipped"
                )
            )
    return candidates, findings, classes


def discover_folder(root: Path) -> tuple[str, list[Candidate], list[Finding]]:
    """ImageFolder: ``train/ val/ [test/]`` of class folders, or one root of class folders."""
    subdirs = _subdirs(root)
    if not subdirs:
        raise DataError(
            f"{root}: no class folders found (expected <class>/<image> or "
            "train/<class>/<image> and val/<class>/<image>)"
        )
    by_split = {
        SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES
    }
    if "train" in by_split and "val" in by_split:
        layout = "split folders: " + ", ".join(f"{s}/" for s in by_split)
        candidates: list[Candidate] = []
        findings: list[Finding] = []
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and entry in by_split.values():
                continue
            kind, why = (
                ("hidden", "hidden entry")
                if _is_hidden(entry.name)
                else ("stray_file", "not a train/val/test folder")
            )
            findings.append(Finding(_show(entry, root), kind, why, "skipped"))
        for split, folder in by_split.items():
            found, notes, _ = _class_folders(root, folder, split)
            candidates += found
            findings += notes
        return layout, candidates, findings
    if "train" in by_split and len(subdirs) == len(by_split):
        found, notes, _ = _class_folders(root, by_split["train"], None)
        return "train/ only: split here", found, notes
    found, notes, _ = _class_folders(root, root, None)
    return "one root of class folders: split here", found, notes


def discover_csv(manifest: Path) -> tuple[str, list[Candidate], list[Finding]]:
    """A CSV of ``path,label[,split]``; paths are relative to the CSV and stay inside its folder."""
    root = manifest.parent.resolve()
    candidates: list[Candidate] = []
    findings: list[Finding] = []
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in columns or "label" not in columns:
                raise DataError(
                    f"{manifest}: needs the columns path,label[,split]; "
                    f"found: {','.join(columns) or 'nothing'}"
                )
            reader.fieldnames = columns
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{manifest}: cannot read the manifest ({err})") from None
    has_split = "split" in columns and any((row.get("split") or "").strip() for row in rows)
    for line, row in enumerate(rows, start=2):
        raw = (row.get("path") or "").strip()
        label = (row.get("label") or "").strip()
        where = f"{manifest.name}:{line}"
        if not raw or not label:
            findings.append(Finding(where, "bad_row", "empty path or label", "skipped"))
            continue
        shown = f"{raw} ({where})"
        rel = PurePosixPath(raw.replace("\\", "/"))
        target = (root / rel).resolve()
        if rel.is_absolute() or not target.is_relative_to(root):
            findings.append(
                Finding(shown, "outside_root", "path leaves the manifest's folder", "skipped")
            )
            continue
        split = None
        if has_split:
            value = (row.get("split") or "").strip().lower()
            split = SPLIT_ALIASES.get(value)
            if split is None:
                findings.append(
                    Finding(
                        shown, "bad_split", f"split {value!r} is not train, val or test", "skipped"
                    )
                )
                continue
        if not target.exists():
            findings.append(Finding(shown, "missing", "file does not exist", "skipped"))
            continue
        if not target.is_file():
            findings.append(Finding(shown, "not_a_file", "not a regular file", "skipped"))
            continue
        candidates.append(Candidate(root / rel, label, split, shown))
    layout = "CSV manifest" + (" with splits" if has_split else ": split here")
    return layout, candidates, findings


def discover(source: Path) -> tuple[str, list[Candidate], list[Finding]]:
    """Dispatch on the source: a ``.csv`` file or a folder. Returns layout, files, findings."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"dataset not found: {source}")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source}: a dataset is a folder or a .csv manifest")
        return discover_csv(source)
    return discover_folder(source)
