"""Interpretability: Grad-CAM heatmaps, DBSCAN lesion centres, PCA, preprocessing figures, the source-shortcut probe."""
