"""Inference over a fold, metrics, scoring and plots."""
