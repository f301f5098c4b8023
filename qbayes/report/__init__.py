"""The HTML report of a fit: :mod:`qbayes.report.document` builds and writes it from the
sections in :mod:`qbayes.report.sections`. This face imports nothing, so the modules of the
package can import each other through it without a cycle."""
