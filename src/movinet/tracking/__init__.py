"""Tracking: the MLflow store, run metadata, sweep parent runs, and logged models."""
