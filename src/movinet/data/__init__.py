"""Data: demo videos, frame extraction (decord), labels CSV ingestion, clip index, datasets."""
