"""Training: experiment configs, in-memory batching, the epoch loop with checkpoints, and the per-fold runner."""
