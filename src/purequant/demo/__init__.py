"""`purequant demo`: train a small CNN on scikit-learn's digits, quantize it, measure, report.

Modules: `train` (data and training), `run` (the demo itself), `measure` (accuracy, SQNR, size,
latency), `table` (the results table), `stages` (each stage's graphs and diff), `views` (node
kinds and decision logs), `layout` (the SVG drawing), `report` (the HTML page), `assets`.
"""

from .run import DemoError, DemoOptions, DemoRun, run_demo

__all__ = ["DemoError", "DemoOptions", "DemoRun", "run_demo"]
