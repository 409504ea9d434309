"""Interpretability: Grad-CAM, lesion centres (DBSCAN), PCA, preprocessing figures."""

"""Interpretability: Grad-CAM heatmaps, DBSCAN lesion centres, PCA, the source-shortcut probe."""
