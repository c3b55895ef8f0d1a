"""The step identity issuer: claims from Airflow's metadata database, signed by its own key.

Mounted by the plugin on the API server under ``/hoop/issuer`` (``plugins/app.py``), and
runnable on its own beside the metadata database (``python -m airflow_hoop.plugins.issuer``)
for ``airflow dags test`` and ``airflow-hoop demo``, which run without an API server.
"""
