"""Sensors (public API, paths stable): ``HoopApprovalSensor``, which asks the gateway for a
review of a task's exact command and defers until a person decides.

May import what operators may (the approval flow lazily, at run time). Never ``gateway``.
"""
