"""Hyper-parameter tuning with Optuna (the only package that imports it): studies, search space, the tuned file."""
