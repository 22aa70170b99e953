"""Batch server: the demo Scheduling API and its shared pieces."""
