"""Recordings (录音): the catalogue of call recordings and their transcription."""
