"""Run a command on its target, one at a time per step and connection.

- ``postgres``: SQL as the step's dynamic user, one connection per step
- ``shell``: hoop's ``custom`` connection, a command on the gateway host
- ``sandbox``: a shell command's limits, user, sandbox and working directory
- ``bwrap``: the bubblewrap sandbox's arguments and its probe
- ``db_relay``: a sandboxed command's unix socket to its database, relayed to TCP
- ``strays``: processes a command left behind, found by their mark and killed
- ``output``: a command's output as it arrives (capped, masked, readable while it runs)

It may import ``masking``, ``db`` (this process's id), ``vault`` (the credential),
``settings``, ``wire``, ``ledger``, ``errors``.
"""
