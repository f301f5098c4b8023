"""The sections of the report, each a module with ``render(ctx) -> Section``."""

from qbayes.report.sections import accuracy, convergence, data, decisions, learned, ppc, summary, validation

SECTIONS = (summary, data, convergence, ppc, learned, validation, decisions, accuracy)  # in page order
