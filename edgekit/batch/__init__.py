"""Batch prediction beyond one process: `edgekit predict --engine ray` (ray_engine.py) over the
inputs sources.py resolves. The local engine (predict_job.py) never imports anything from here."""
