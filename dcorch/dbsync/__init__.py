"""The DB-sync agent: dcdbsync's identity REST contract over a real keystone database.

dcorch replicates identity objects with the master's ids and password hashes, which keystone's
API cannot do; the agent beside each keystone reads and writes its tables instead
(``docs/dbsync.md``). :mod:`.contract` is the record contract, shared with the simulator.
"""
