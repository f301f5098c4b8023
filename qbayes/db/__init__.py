"""The quantization results database (polars + parquet)."""

from qbayes.db.database import Database
from qbayes.db.schema import SCHEMA_VERSION, TABLES
from qbayes.db.store import InvalidDatabase, load, save

__all__ = ["SCHEMA_VERSION", "TABLES", "Database", "InvalidDatabase", "load", "save"]
