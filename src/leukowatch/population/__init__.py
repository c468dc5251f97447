"""Population screening: the per-patient rules as relational expressions on DuckDB or Spark.

`screen(inputs, outdir, engine="duckdb")` reads tabular files, an OMOP CDM or the leukowatch store
and writes graded results, episodes, chronic cases, drug-associated episodes, per-person flags, a
summary and the rejects (see README, "Screening a population").
"""

from .screen import OUTPUTS, ScreenResult, print_summary, screen

__all__ = ["OUTPUTS", "ScreenResult", "print_summary", "screen"]
