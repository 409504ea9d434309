"""covidscan: an open MLOps platform for COVID-19 detection on chest X-ray and CT.

Research use only; not a medical device.
"""

__version__ = "0.1.0"

RESEARCH_NOTICE = "For research use only. Not a medical device; not for diagnostic use."
