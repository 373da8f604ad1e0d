"""redis_wait_replicas: a decision's record is answered only once a replica has it.

The session's redis-server has no replica, which is exactly the case that must
refuse: WAIT 1 gets 0 acknowledgements, so the batch raises StoreUnavailable
(the milter answers 451) while the write itself stays on the primary.
tests/test_faults.py runs the real thing: a failover under load with a replica.
"""

from __future__ import annotations

import uuid

import pytest

from regfd.errors import StoreUnavailable
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.conftest import RedisServer


def store(server: RedisServer, replicas: int) -> RedisStore:
    """A store on its own prefix that WAITs for `replicas` (50 ms) on a durable batch."""
    return RedisStore(client_from_url(server.url), f"w{uuid.uuid4().hex[:8]}:", wait_replicas=replicas,
                      wait_timeout=0.05)


def test_durable_batch_without_a_replica_refuses_but_keeps_the_write(redis_server: RedisServer) -> None:
    s = store(redis_server, 1)
    with (pytest.raises(StoreUnavailable, match="0 of 1 replicas acknowledged"),
          s.batch("decision not recorded", durable=True) as tx):
        tx.pipe.xadd(s.k("records"), {"r": "{}"})
    assert s.r.xlen(s.k("records")) == 1  # on the primary: a record of a decision the MTA then tempfailed


def test_other_batches_and_no_wait_setting_do_not_wait(redis_server: RedisServer) -> None:
    waiting, plain = store(redis_server, 1), store(redis_server, 0)
    with waiting.batch("outbox write failed") as tx:  # not a decision: no WAIT
        tx.pipe.xadd(waiting.k("records"), {"r": "{}"})
    with plain.batch("decision not recorded", durable=True) as tx:
        tx.pipe.xadd(plain.k("records"), {"r": "{}"})
    assert waiting.r.xlen(waiting.k("records")) == 1 and plain.r.xlen(plain.k("records")) == 1
