"""Bad-input fuzzing of every surface dcorch serves, in one place for CI and the campaign.

The reliability suite (``tests/reliability/test_bad_input.py``) draws a few hundred inputs per
run; ``./just fuzz`` (``python -m bench.fuzz``) draws ten thousand or more from the same
generators and judges them with the same checks:

* :mod:`.inputs`: hypothesis strategies for the v1 API (hand-written and drawn from
  ``/openapi.json``), the identity and platform proxies, raw HTTP (truncated bodies, broken
  framing, huge headers) and the DB-sync contract (records checked against keystone's tables);
* :mod:`.checks`: the verdict on one answer: a 5xx made by dcorch (not relayed from the
  master), a database change on a rejected input, an accepted change lost, a secret in a log;
* :mod:`.system`: the system under test: the harness in a thread of its own, a spare simulated
  cloud for the DB-sync routes, the ``dcorch dbsync`` agent over a keystone-schema database;
* :mod:`.surfaces`: how one input of each surface is sent and judged;
* :mod:`.campaign`: the seeded campaign, its report and exit status.
"""
