"""When not to trust a prediction: the new body against the training bodies (units, frame, range)."""
