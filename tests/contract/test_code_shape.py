"""Small rooms: no library function longer than 80 lines, unless a comment just above
it says why (a line starting ``# Long``). ruff's C901 and PLR0915 (pyproject.toml) see
the same thing as branches and statements."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 80


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = first - 2
            while above >= 0 and lines[above].lstrip().startswith("#"):
                above -= 1
            comment = [line.strip() for line in lines[above + 1 : first - 1]]
            if length > MAX_LINES and not any(c.startswith("# Long") for c in comment):
                found.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_library_function_is_over_80_lines_without_a_reason(project_root: Path) -> None:
    assert long_functions(project_root / "transferpilot") == []


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    source = f"def long():\n{body}\n\n\n# Long: a reason\ndef ok():\n{body}\n"
    (tmp_path / "a.py").write_text(source)
    assert long_functions(tmp_path) == ["a.py:1 long (81 lines)"]
