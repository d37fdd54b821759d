"""Regenerate BENCHMARKS.md's tables from benchmark JSON results (never typed by hand).

Every benchmark script writes a JSON file with a ``table`` entry::

    {"benchmark": "name", "table": {"title": str, "columns": [str], "rows": [[cell, ...]],
                                   "notes": [str]}, ...}

This script takes the newest JSON per benchmark under ``bench/results/`` and rewrites the part
of BENCHMARKS.md between ``<!-- tables:begin -->`` and ``<!-- tables:end -->``. A full-size
result wins over any quick one (a smoke run never hides the real figures); a quick result is
shown only for a benchmark that has no full one, and its title says "(quick)".

    python bench/report.py [--results bench/results] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def fmt(cell: Any) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return f"{cell:.4g}" if abs(cell) < 1e4 else f"{cell:,.0f}"
    return str(cell).replace("|", "\\|")


def render_table(doc: dict[str, Any], source: str) -> str:
    """Markdown for one benchmark JSON document."""
    table = doc["table"]
    lines = [f"### {table['title']}", "", f"Source: `{source}`", ""]
    lines.append("| " + " | ".join(table["columns"]) + " |")
    lines.append("|" + "---|" * len(table["columns"]))
    for row in table["rows"]:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    for note in table.get("notes", []):
        lines.append("")
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def is_quick(path: Path, doc: dict[str, Any]) -> bool:
    """Whether a result comes from a quick (smoke-size) run: its JSON or its folder/file name says so."""
    args = doc.get("args")
    flagged = bool(doc.get("quick")) or (isinstance(args, dict) and bool(args.get("quick")))
    return flagged or any(part.endswith("-quick") or part.endswith("-quick.json") for part in path.parts)


def newest_results(results: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The newest JSON document per benchmark name that carries a table, full runs before quick ones."""
    found: dict[str, tuple[tuple[bool, str], Path, dict[str, Any]]] = {}
    for path in results.rglob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or "table" not in doc:
            continue
        name = str(doc.get("benchmark", path.stem))
        # Newest by the path (result files and folders carry their date/time), not by mtime,
        # which a fresh clone resets.
        key = (not is_quick(path, doc), str(path.relative_to(results)))
        if name not in found or key > found[name][0]:
            found[name] = (key, path, doc)
    return {k: (p, d) for k, (_, p, d) in sorted(found.items())}


def render_all(results: Path, root: Path) -> str:
    parts = []
    for _name, (path, doc) in newest_results(results).items():
        try:
            source = str(path.relative_to(root))
        except ValueError:
            source = str(path)
        parts.append(render_table(doc, source))
    return "\n".join(parts) if parts else "_No benchmark results yet: run `python bench/run_all.py --quick`._\n"


def update(markdown: str, tables: str) -> str:
    """Replace the generated section of ``markdown`` with ``tables``."""
    if BEGIN not in markdown or END not in markdown:
        return markdown.rstrip() + f"\n\n{BEGIN}\n{tables}{END}\n"
    head, rest = markdown.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables}{END}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("bench/results"))
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args()
    root = args.out.resolve().parent
    text = args.out.read_text() if args.out.is_file() else "# Benchmarks\n"
    args.out.write_text(update(text, render_all(args.results, root)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
