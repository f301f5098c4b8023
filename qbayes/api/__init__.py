"""The public Python API: ``qbayes.load`` a posterior, ``Model.predict`` a DataFrame of
queries. The command line predicts through the same functions (qbayes.api.predict)."""

from qbayes.api.model import Model, load
from qbayes.errors import QBayesError

__all__ = ["Model", "QBayesError", "load"]
