"""At-least-once that survives `kill -9` and rebalances: Faust's commit, with two gaps closed.

1. Outputs are durable before input offsets are committed. Faust (0.15.3) commits the offset of
every acked record on a timer, but does not wait for what handling that record produced: the
table's changelog records (queued by `table[key] = ...`) and the segment changes sit in the
producer's buffers for a few milliseconds. A worker killed in that window leaves the input
offset committed and its outputs lost: the record is never handled again, and the customer's
state silently misses it. Kafka Streams flushes its producer before every commit; this consumer
does the same. The flush runs once per commit (every second or 1,000 records), not per record.

2. Records of an earlier consumer generation do not count as handled. After a rebalance, Faust's
stream drops the records fetched before it (the partitions are read again from the committed
offset) but acks them; those acks let the committed offset jump past records that the agent has
not handled yet (with the event clock they wait in the merge buffer). A crash after such a commit
lost them for good. Here an ack of a stale-generation record marks the message only.

3. No commit past a record that was not acked. Faust's check of the first acked offset against
the committed one is off by one, so one missing record (see `streams/contiguity.py`) could be
committed past; here the acked offsets must begin at the committed offset.

With exactly_once (Kafka transactions) the commit is the transaction's; one gap remains, in table
recovery (`TransactionalConsumer`): see `_LastStableOffsets`.
"""

from __future__ import annotations

from collections.abc import Iterable

from faust.exceptions import ProducerSendError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP, Message


class _CurrentGenerationAcks(Consumer):
    def ack(self, message: Message) -> bool:
        if message.generation_id != self.app.consumer_generation_id:
            message.acked = True  # dropped by the stream; read again from the committed offset
            return False
        return bool(super().ack(message))

    def _new_offset(self, tp: TP) -> int | None:
        # Faust lets the first acked offset be one past the committed one (`min(acked) -
        # committed > 1` with `committed` the next offset to read): a record at the committed
        # offset that was never acked (not delivered, or waiting in the event-time merge) was
        # committed past. Here the acked offsets must start at the committed offset, unless a
        # known gap (transaction markers) covers it.
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if (acked and committed is not None and min(acked) > committed
                and not self._gap[tp].overlaps(committed)):
            return None
        new: int | None = super()._new_offset(tp)
        return new


class SafeCommitConsumer(_CurrentGenerationAcks):
    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        # the offsets first: every record acked by now has queued all of its outputs
        commit_offsets = self._filter_committable_offsets(tps)
        if not commit_offsets:
            return False
        try:
            await self.app.producer.flush()
            await self._handle_attached(commit_offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        return await self._commit_offsets(commit_offsets,
                                          start_new_transaction=start_new_transaction)


class _LastStableOffsets(AIOKafkaConsumerThread):
    """Faust 0.15.3 takes a changelog's end, in a transaction, from `last_stable_offset()`:
    the value of the last fetch response, None (read as -1, "empty") for a partition not
    fetched yet, such as the changelog of a partition taken over from a killed worker. The
    survivor then restored an empty table (customers began again at seq 1) or crashed with
    ConsistencyError. With isolation read_committed, `end_offsets` asks the broker for the last
    stable offset itself."""

    async def _highwaters(self, partitions: list[TP]) -> dict[TP, int]:
        ends: dict[TP, int] = await self._ensure_consumer().end_offsets(partitions)
        return ends


class TransactionalConsumer(_CurrentGenerationAcks):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _LastStableOffsets(self, loop=self.loop, beacon=self.beacon)
