"""The UTA paper's published tables, kept as data in `utabench/results/paper_table*.csv` (their `#` lines say where
the row keys come from)."""

from __future__ import annotations

from importlib import resources
from io import StringIO

import pandas as pd


def published_table(csv: str) -> pd.DataFrame:
    """A published table, read with its score columns as numbers."""
    text = resources.files("utabench.results").joinpath(csv).read_text()
    return pd.read_csv(StringIO(text), comment="#", dtype=str, keep_default_na=False).apply(_numbers)


def _numbers(column: pd.Series) -> pd.Series:
    """Score columns as floats (blank: not published), whole-number columns (input sizes) as ints; names, pairs
    and row keys stay text."""
    if column.name.startswith("key_") or not (column != "").any():
        return column
    converted = pd.to_numeric(column.replace("", None), errors="coerce")
    if converted.notna().sum() != (column != "").sum():
        return column
    whole = converted.notna().all() and (converted == converted.round()).all() and "." not in "".join(column)
    return converted.astype(int) if whole else converted
