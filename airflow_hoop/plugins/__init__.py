"""Airflow plugins shipped with airflow-hoop (registered through the ``airflow.plugins`` entry point)."""
