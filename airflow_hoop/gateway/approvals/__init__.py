"""Approvals: a command a rule marks runs only with an approved, unused review of it.

- ``gate``: the exec path's check, using one approval per statement or refusing (recorded)
- ``service``: hoop's review state machine (requests, decisions, reads)
- ``wire``: reviews on the wire, statements of a request as rows
- ``store``: the ``reviews`` table, each change written with its ledger record

It may import ``targets``, ``access``, ``execution`` (SQL labels), ``db``, ``settings``,
``wire``, ``ledger``, ``errors``.
"""
