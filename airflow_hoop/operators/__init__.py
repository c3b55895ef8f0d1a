"""Operators (public API, paths stable): ``HoopPostgresOperator`` (a drop-in
``SQLExecuteQueryOperator``) and ``HoopShellOperator`` (a drop-in ``BashOperator``), both run
through the gateway as the step, ``approval_mixin`` (``requires_approval=True``, light at DAG parse) and ``approval_request``
(asking the gateway for a review and deferring, shared with the sensor; run time only).

May import: ``defaults``, ``errors``, ``hooks``, ``triggers`` and, inside ``execute`` only,
``task``, ``client`` and ``wire`` (a DAG file that uses an operator imports none of the
runtime). Never ``gateway``.
"""
