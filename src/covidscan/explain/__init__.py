"""Interpretability: Grad-CAM, lesion centres (DBSCAN), PCA, preprocessing figures."""
