"""The annotation platform (``covidscan annotate``): a client-server web application where two readers
box suspected lesion areas on the de-identified X-rays and CT series of the ingest folder and record a
binary COVID-19 read, a senior adjudicates their disagreements, and the result is exported in the
format ingest reads (Liang et al. 2020's private-cloud annotation platform; docs/ANNOTATION.md).

Modules: ``cases`` (the ingest folder's records, rendered as PNG), ``store`` (SQLAlchemy models,
Alembic migrations), ``auth`` (accounts, Argon2 passwords, sessions, CSRF, lock-out, roles),
``workflow`` (box pairing, IoU, the adjudication rule, kappa), ``reading`` (the work in the store),
``export`` (CSV/JSON + agreement report), ``suggest`` (model-assisted pre-annotation), ``app`` (FastAPI).
"""
