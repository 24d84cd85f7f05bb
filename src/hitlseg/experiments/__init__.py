"""Experiment protocols that compare image-selection methods over data splits, with reports."""

from hitlseg.experiments.protocol import METHODS, ProtocolConfig, run_protocol
from hitlseg.experiments.report import correlation, table_one, table_two, write_report

__all__ = ["METHODS", "ProtocolConfig", "correlation", "run_protocol", "table_one", "table_two", "write_report"]
