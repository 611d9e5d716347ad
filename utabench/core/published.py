"""The UTA paper's published tables, kept as data in `utabench/results/paper_table*.csv` (their `#` lines say where
the row keys come from)."""

from __future__ import annotations

import re
from importlib import resources
from io import StringIO

import pandas as pd

# a number with the paper's footnote mark
_MARKED = re.compile(r"^(?P<number>[-+]?\d+(?:\.\d+)?)(?P<mark>[†‡]+)$")


class Marked(float):
    """A published number printed with a footnote mark (Table 4's "0.1‡"): a float to compute with, which formats
    with its mark (`f"{value:.1f}"` is "0.1‡"), so a table shows it as the paper prints it; `str` is the bare
    number."""

    mark: str

    def __new__(cls, value: float, mark: str = "") -> "Marked":
        number = super().__new__(cls, value)
        number.mark = mark
        return number

    def __getnewargs__(self):
        return float(self), self.mark

    def __format__(self, spec: str) -> str:
        return super().__format__(spec) + self.mark


def published_table(csv: str) -> pd.DataFrame:
    """A published table, read with its score columns as numbers."""
    text = resources.files("utabench.results").joinpath(csv).read_text()
    return pd.read_csv(StringIO(text), comment="#", dtype=str, keep_default_na=False).apply(_numbers)


def _numbers(column: pd.Series) -> pd.Series:
    """Score columns as floats (blank: not published; a marked cell a `Marked` float), whole-number columns (input
    sizes) as ints; names, pairs and row keys stay text."""
    if column.name.startswith("key_") or not (column != "").any():
        return column
    marked = column.str.extract(_MARKED)
    plain = column.where(marked.mark.isna(), marked.number)
    converted = pd.to_numeric(plain.replace("", None), errors="coerce")
    if converted.notna().sum() != (column != "").sum():
        return column
    whole = converted.notna().all() and (converted == converted.round()).all() and "." not in "".join(column)
    converted = converted.astype(int) if whole else converted
    if marked.mark.isna().all():
        return converted
    return pd.Series([Marked(value, mark) if isinstance(mark, str) else value
                      for value, mark in zip(converted, marked.mark)], index=column.index, name=column.name,
                     dtype=object)
