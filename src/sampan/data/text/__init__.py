"""Text data that ships with sampan.

industrial_pairs.csv: about a hundred pairs of short industrial and enterprise sentences
(maintenance tickets, quality reports, invoices, logistics, safety, office) with a graded
similarity from 0 (unrelated) to 5 (same meaning), in the `text1,text2,score` pair format
that text-embedding evaluation reads. Written for this project by its developers, not taken
from any corpus; Apache-2.0 like the code.
"""

from __future__ import annotations

from pathlib import Path

PAIRS_FILE = "industrial_pairs.csv"


def pairs_path() -> Path:
    """The bundled industrial similarity pairs (CSV: text1, text2, score 0-5)."""
    return Path(__file__).with_name(PAIRS_FILE)
