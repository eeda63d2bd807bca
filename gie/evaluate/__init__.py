"""Evaluation of bundles against the next day's gifts, baselines, and the downstream ablation."""
