"""Who the caller is and what it may reach.

- ``auth``: a step's Vault identity token or an ``hpk_`` API key, verified into a principal
- ``verified_tokens``: tokens already verified, and the steps that ended (refused at once)
- ``policy``: which DAG may use which connection; refusals recorded in the ledger

It may import ``db``, ``settings``, ``ledger``, ``errors``.
"""
