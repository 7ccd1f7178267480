"""Evaluating the program without a Pulumi engine: capture and offline preview."""
