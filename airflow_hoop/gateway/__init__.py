"""The gateway service: the enforcement point between Airflow and the targets.

A separate process (FastAPI + uvicorn). It never imports Airflow.
"""
