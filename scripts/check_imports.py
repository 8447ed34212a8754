"""Fail when a module of the application imports inside a function (CONVENTIONS: imports stay at the top).

Imports under `if TYPE_CHECKING:` are fine. Usage: python scripts/check_imports.py [DIR ...]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("models", "handlers", "jobs", "server", "wechat")


def late_imports(path: Path) -> list[str]:
    """'path:line: statement' for every import inside a function or method of the file."""
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                found.append(f"{path}:{child.lineno}: {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False)
    return found


def main(roots: list[str]) -> int:
    problems = [line for root in roots for path in sorted(Path(root).rglob("*.py")) for line in late_imports(path)]
    for line in problems:
        print(line)
    if problems:
        print(f"\n{len(problems)} imports inside functions: move them to the top of the file", file=sys.stderr)
        return 1
    print(f"no imports inside functions in {', '.join(roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(PACKAGES)))
