"""MLflow tracking and registry: the only modules that import MLflow."""
