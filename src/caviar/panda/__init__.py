"""Panda mode: babysit one model, watch its curves, steer its hyperparameters while it trains."""
