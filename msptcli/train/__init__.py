"""Training MSPT on a prepared dataset: data loading, the loop, checkpoints, metrics."""
