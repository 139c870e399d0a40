"""The batcher on its own: pure asyncio with fake engines."""

import asyncio
import threading
import time

import numpy as np
import pytest

from sampan.errors import ConfigError
from sampan.serving.batcher import Batcher, DeadlineExceeded, Overloaded


class FakeEngine:
    """Doubles its input; records batch sizes; optionally slow or failing on a marker value."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.delay, self.fail_on = delay, fail_on
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait(5)
        self.batches.append(len(batch))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (batch == self.fail_on).any():
            raise ValueError("poisoned input")
        return batch * 2


def rows(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def run(coro):
    return asyncio.run(coro)


async def started(engine, **options) -> Batcher:
    batcher = Batcher([engine], **options)
    await batcher.start()
    return batcher


def test_batches_form_by_size_and_results_reach_their_callers():
    async def main():
        engine = FakeEngine()
        engine.gate.clear()  # hold the engine so that requests pile up
        batcher = await started(engine, max_batch_size=4, max_wait_ms=50)
        first = asyncio.create_task(batcher.submit(rows(-1)))
        await asyncio.sleep(0.02)
        tasks = [asyncio.create_task(batcher.submit(rows(i))) for i in range(8)]
        await asyncio.sleep(0.02)
        engine.gate.set()
        results = await asyncio.gather(first, *tasks)
        await batcher.stop()
        return engine.batches, results

    batches, results = run(main())
    assert [r.item() for r in results] == [-2.0] + [2.0 * i for i in range(8)]
    assert batches == [1, 4, 4]


def test_batches_form_by_time():
    async def main():
        engine = FakeEngine()
        batcher = await started(engine, max_batch_size=32, max_wait_ms=80, adaptive_wait=False)
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(batcher.submit(rows(i))))
            await asyncio.sleep(0.01)  # well inside the 80 ms window
        await asyncio.gather(*tasks)
        late = await batcher.submit(rows(9))  # alone, after the window closed
        await batcher.stop()
        return engine.batches, late

    batches, late = run(main())
    assert batches == [3, 1] and late.item() == 18.0


def test_a_lone_caller_is_not_made_to_wait():
    async def main():
        batcher = await started(FakeEngine(), max_batch_size=32, max_wait_ms=200)
        started_at = time.perf_counter()
        for _ in range(5):
            await batcher.submit(rows(1))
        elapsed = time.perf_counter() - started_at
        await batcher.stop()
        return elapsed

    # With a fixed 200 ms delay five sequential calls would take a second.
    assert run(main()) < 0.5


def test_a_backlog_runs_at_once_and_a_lone_request_waits_for_company():
    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=32, max_wait_ms=300)

        def submit(v):
            return asyncio.create_task(batcher.submit(rows(v)))

        first = submit(0)
        await asyncio.sleep(0.05)
        pair = [submit(1), submit(2)]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await asyncio.gather(first, *pair)  # batches [1, 2]: concurrency seen
        engine.gate.clear()
        lone = [submit(3)]  # waits up to 300 ms for company, and gets some
        await asyncio.sleep(0.05)
        lone.append(submit(4))
        await asyncio.sleep(0.4)  # its window closed: [3, 4] runs, held by the gate
        backlog = [submit(v) for v in (5, 6, 7)]
        await asyncio.sleep(0.05)
        released = time.perf_counter()
        engine.gate.set()
        await asyncio.gather(*lone, *backlog)
        elapsed = time.perf_counter() - released
        await batcher.stop()
        return engine.batches, elapsed

    batches, elapsed = run(main())
    # The backlog that queued while [3, 4] ran went at once, not after another 300 ms window.
    assert batches == [1, 2, 2, 3] and elapsed < 0.25


def test_multi_row_requests_keep_their_rows_together():
    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=5)
        blocker = asyncio.create_task(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        a = asyncio.create_task(batcher.submit(rows(1, 2, 3)))
        b = asyncio.create_task(batcher.submit(rows(4, 5, 6)))
        await asyncio.sleep(0.02)
        engine.gate.set()
        out = await asyncio.gather(blocker, a, b)
        await batcher.stop()
        return engine.batches, out

    batches, (_, a, b) = run(main())
    assert a.ravel().tolist() == [2, 4, 6] and b.ravel().tolist() == [8, 10, 12]
    assert batches == [1, 3, 3]  # 3 + 3 > 5: the second request waits for the next batch


def test_a_failing_input_fails_its_batch_and_nothing_else():
    async def main():
        engine = FakeEngine(fail_on=13.0)
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=3)
        blocker = asyncio.create_task(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        same = [asyncio.create_task(batcher.submit(rows(v))) for v in (1, 13, 2)]
        other = [asyncio.create_task(batcher.submit(rows(v))) for v in (3, 4)]
        await asyncio.sleep(0.02)
        engine.gate.set()
        results = await asyncio.gather(blocker, *same, *other, return_exceptions=True)
        await batcher.stop()
        return results

    results = run(main())
    assert results[0].item() == 0.0
    assert all(isinstance(r, ValueError) and "poisoned" in str(r) for r in results[1:4])
    assert [r.item() for r in results[4:]] == [6.0, 8.0]


def test_wrong_row_count_from_the_engine_reaches_every_caller():
    async def main():
        batcher = Batcher(
            [lambda batch: batch[:1]], max_batch_size=4, max_wait_ms=50, adaptive_wait=False
        )
        await batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(rows(i)) for i in range(3)), return_exceptions=True
        )
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) and "1 rows for 3" in str(r) for r in run(main()))


def test_full_queue_refuses_at_once_and_deadlines_are_kept():
    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=1, max_queue=2)
        running = asyncio.create_task(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        queued = [asyncio.create_task(batcher.submit(rows(i), timeout=0.01)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(rows(3))
        await asyncio.sleep(0.05)
        engine.gate.set()
        results = await asyncio.gather(running, *queued, return_exceptions=True)
        await batcher.stop()
        return results

    results = run(main())
    assert results[0].item() == 0.0
    assert all(isinstance(r, DeadlineExceeded) for r in results[1:])


def test_a_deadline_holds_while_its_batch_runs():
    """A caller whose batch is stuck in the engine hears DeadlineExceeded at its deadline; the
    batch's late result goes nowhere, and the engine serves the next caller."""

    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=4)
        stuck = asyncio.create_task(batcher.submit(rows(1), timeout=0.05))
        patient = asyncio.create_task(batcher.submit(rows(2)))  # no deadline: it waits
        with pytest.raises(DeadlineExceeded, match=r"No answer within 0\.05s"):
            await stuck
        assert not patient.done()
        engine.gate.set()
        late = await patient
        after = await batcher.submit(rows(3), timeout=5)
        await batcher.stop()
        return late, after

    late, after = run(main())
    assert late.item() == 4.0 and after.item() == 6.0


def test_requests_answered_while_queued_free_their_places():
    """Two queued requests time out while the engine is stuck: the queue (of 2) then takes a
    new one instead of refusing it, and the answered ones take no rows of the next batch."""

    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=2, max_queue=2)
        running = asyncio.create_task(batcher.submit(rows(0)))
        while not batcher.busy:  # the engine has taken it (and is stuck at the gate)
            await asyncio.sleep(0.001)
        late = [asyncio.create_task(batcher.submit(rows(i), timeout=0.02)) for i in (1, 2)]
        timed_out = await asyncio.gather(*late, return_exceptions=True)
        fresh = asyncio.create_task(batcher.submit(rows(3)))
        await asyncio.sleep(0)
        engine.gate.set()
        results = await asyncio.gather(running, fresh)
        await batcher.stop()
        return timed_out, results, engine.batches

    timed_out, results, batches = run(main())
    assert all(isinstance(r, DeadlineExceeded) for r in timed_out)
    assert [r.item() for r in results] == [0.0, 6.0]
    assert batches == [1, 1]  # the fresh request ran alone: the two answered ones took no rows


def test_instances_share_the_queue():
    async def main():
        engines = [FakeEngine(delay=0.05), FakeEngine(delay=0.05)]
        batcher = Batcher(engines, max_batch_size=1)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(rows(i)) for i in range(4)))
        await batcher.stop()
        return [len(e.batches) for e in engines]

    assert run(main()) == [2, 2]


def test_settings_are_checked_when_built():
    with pytest.raises(ConfigError, match=r"max_batch_size must be >= 1.*max_queue must be >= 1"):
        Batcher([FakeEngine()], max_batch_size=0, max_queue=0)
    with pytest.raises(ConfigError, match="at least one engine"):
        Batcher([])


def test_a_closed_batcher_finishes_what_it_holds_and_refuses_the_rest():
    from sampan.serving.batcher import Retired

    async def main():
        engine = FakeEngine()
        engine.gate.clear()
        batcher = await started(engine, max_batch_size=4, max_wait_ms=0)
        held = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(3)]
        await asyncio.sleep(0.05)
        batcher.close()
        with pytest.raises(Retired):
            await batcher.submit(rows(9.0))
        engine.gate.set()
        await batcher.drain(5)
        await batcher.stop()
        return [float(r[0, 0]) for r in await asyncio.gather(*held)]

    assert run(main()) == [0.0, 2.0, 4.0]


def test_named_rows_of_different_lengths_are_padded_into_one_batch():
    from sampan.serving.batcher import count_rows, merge_rows

    seen = []

    def engine(batch):  # sums each row's ids, where the mask says they are real
        seen.append({k: v.shape for k, v in batch.items()})
        return (batch["ids"] * batch["mask"]).sum(1, keepdims=True).astype(np.float32)

    def request(*rows):
        width = max(len(r) for r in rows)
        ids = np.array([list(r) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
        mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
        return {"ids": ids, "mask": mask}

    async def main():
        batcher = Batcher([engine], max_batch_size=8, max_wait_ms=50, adaptive_wait=False)
        await batcher.start()
        calls = [request([1, 2]), request([5, 5, 5, 5], [1]), request([7])]
        out = await asyncio.gather(*(batcher.submit(c) for c in calls))
        await batcher.stop()
        return [o[:, 0].tolist() for o in out]

    assert run(main()) == [[3.0], [20.0, 1.0], [7.0]]
    assert seen == [{"ids": (4, 4), "mask": (4, 4)}]  # one batch, padded to the longest
    merged = merge_rows([request([1]), request([1, 2, 3])])
    assert count_rows(merged) == 2 and merged["mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


def test_a_failing_metrics_callback_costs_no_caller_its_answer():
    from sampan.serving.batcher import BatchStats

    def broken(*_):
        raise ValueError("metrics down")

    async def main():
        stats = BatchStats(on_batch=broken, on_queue=broken, on_calls=broken)
        batcher = Batcher([FakeEngine()], max_batch_size=4, stats=stats)
        await batcher.start()
        first = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(3)))
        again = await batcher.submit(rows(5))  # the engine thread is still there
        await batcher.stop()
        return [r.item() for r in first], again.item()

    assert run(main()) == ([0.0, 2.0, 4.0], 10.0)


def test_an_engine_raising_stopiteration_fails_its_callers_cleanly():
    def engine(batch):
        raise StopIteration

    async def main():
        batcher = Batcher([engine], max_batch_size=4)
        await batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(rows(i)) for i in range(2)), return_exceptions=True
        )
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) and "StopIteration" in str(r) for r in run(main()))


def test_each_answered_batch_reports_where_its_time_went():
    from sampan.serving.batcher import BatchStats, Execution

    async def main():
        engine = FakeEngine(delay=0.02, fail_on=-1)
        engine.gate.clear()  # the first request holds the engine; three queue behind it
        runs: list[Execution] = []
        batcher = Batcher([engine], max_batch_size=8, stats=BatchStats(on_executed=runs.append))
        await batcher.start()
        first = asyncio.create_task(batcher.submit(rows(9)))
        while batcher.busy == 0:  # the engine thread took it (however slow the machine)
            await asyncio.sleep(0.001)
        tasks = [asyncio.create_task(batcher.submit(rows(i, i))) for i in range(3)]
        await asyncio.sleep(0.03)
        engine.gate.set()
        await asyncio.gather(first, *tasks)
        with pytest.raises(ValueError):  # a failed batch is not an execution
            await batcher.submit(rows(-1))
        await batcher.stop()
        return runs

    held, queued = run(main())
    assert (held.rows, held.requests, queued.rows, queued.requests) == (1, 1, 6, 3)
    assert held.queued_s < queued.queued_s / 3 and held.infer_s >= 0.03  # held in the engine
    assert queued.queued_s >= 3 * 0.025  # each of the three waited behind it
    assert queued.infer_s >= 0.02 and queued.input_s >= 0 and queued.output_s >= 0


def test_a_caller_gone_before_its_batch_ends_is_not_reported_as_answered():
    from sampan.serving.batcher import BatchStats, Execution

    first_done, second_done = threading.Event(), threading.Event()

    def engine(batch: np.ndarray) -> np.ndarray:
        (second_done if first_done.is_set() else first_done).wait(5)
        first_done.set()
        return batch * 2

    async def main():
        runs: list[Execution] = []
        batcher = Batcher([engine], max_batch_size=8, stats=BatchStats(on_executed=runs.append))
        await batcher.start()
        holder = asyncio.create_task(batcher.submit(rows(0)))
        while batcher.busy == 0:  # the first batch holds the engine
            await asyncio.sleep(0.001)
        late = asyncio.create_task(batcher.submit(rows(1, 2, 3), timeout=1.0))
        kept = asyncio.create_task(batcher.submit(rows(4)))
        await asyncio.sleep(0.01)
        first_done.set()  # the two queued requests run as one batch, held until...
        with pytest.raises(DeadlineExceeded):
            await late  # ...the first one's deadline has passed
        second_done.set()
        await asyncio.gather(holder, kept)
        await batcher.stop()
        return runs

    held, execution = run(main())
    assert (held.requests, held.rows) == (1, 1)
    assert execution.calls[0][0] == 4  # the engine ran all four rows
    assert (execution.requests, execution.rows) == (1, 1)  # and answered one caller's row
