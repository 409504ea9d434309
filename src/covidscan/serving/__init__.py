"""Serving without a framework: bundles, untrusted uploads, the predictor, the HTTP body guard.

``bento/`` (BentoML) calls these; nothing here imports BentoML.
"""
