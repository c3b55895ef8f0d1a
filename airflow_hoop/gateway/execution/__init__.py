"""One governed command's run, once its checks passed (``gateway/pipeline.py``).

- ``sessions``: an accepted exec from its intent record to its result record
- ``steps``: the live step contexts (a dynamic database user, a runner), released at step end
- ``step_end_bus``: tells the other gateway processes when a step ends
- ``runners/``: SQL on a target database, shell commands in a sandbox
- ``shell_exec``: a shell exec request checked (SQL labels: ``ledger/sql_label.py``)

It may import ``masking``, ``db``, ``vault``, ``settings``, ``wire``, ``ledger``, ``errors``; it never
imports the targets (``steps.ContextTarget`` and ``sessions.SessionTarget`` say what it needs
of one), approvals, access or routes.
"""
