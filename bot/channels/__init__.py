"""Channels: each turns its updates into UserMessages and renders the core's stream."""
