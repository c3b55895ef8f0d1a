"""What runs beside the ledger in every gateway process.

- ``checkpoints``: signed checkpoints of the ledger (Vault transit), copied to the anchor
- ``recovery``: the heartbeat, and the sweep that closes what a dead gateway left open

It may import ``db``, ``execution`` (stray shell processes), ``vault``, ``settings``,
``ledger``, ``errors``.
"""
