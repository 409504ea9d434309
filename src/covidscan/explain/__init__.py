"""Interpretability: Grad-CAM heatmaps, DBSCAN lesion centres, PCA, the source-shortcut probe."""
