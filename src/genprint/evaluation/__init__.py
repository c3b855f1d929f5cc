"""Evaluation: open-set metrics and the evaluation loop."""
