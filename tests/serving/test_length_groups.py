"""Batching grouped by sequence length: the pure grouping, and named rows through the Batcher."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sampan.errors import ConfigError
from sampan.serving.batcher import (
    Batcher,
    BatchStats,
    length_groups,
    merge_rows,
    padding_waste,
    row_lengths,
)


def texts(*lengths: int, offset: int = 0) -> dict[str, np.ndarray]:
    """Collated 'texts' of the given lengths: ids 1.. on real tokens, mask 1, zeros after."""
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) + offset + row
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def check_partition(groups: list[np.ndarray], n: int) -> None:
    """Every row in exactly one group."""
    assert sorted(np.concatenate(groups).tolist()) == list(range(n))


def test_row_lengths_count_real_tokens_in_any_named_array():
    rows = texts(3, 7, 1)
    assert row_lengths(rows).tolist() == [3, 7, 1]
    rows["input_ids"][0, 2] = 0  # a real token whose id is 0: the mask still counts it
    assert row_lengths(rows).tolist() == [3, 7, 1]
    padded = merge_rows([texts(2), texts(9)])
    assert row_lengths(padded).tolist() == [2, 9]


def test_one_group_in_order_when_lengths_are_similar():
    lengths = np.array([30, 28, 31, 25, 29] * 8)
    assert padding_waste(lengths) < 0.5
    groups = length_groups(lengths, max_waste=0.5, min_rows=8)
    assert len(groups) == 1 and groups[0].tolist() == list(range(40))


def test_small_batches_are_not_split():
    lengths = np.array([200] + [10] * 14)  # wasteful, but under two groups of 8
    assert padding_waste(lengths) > 0.5
    assert [g.tolist() for g in length_groups(lengths, 0.5, 8)] == [list(range(15))]


def test_one_long_text_among_short_ones_is_split_off():
    lengths = np.array([10] * 15 + [200] + [10] * 15)
    groups = length_groups(lengths, max_waste=0.5, min_rows=8)
    assert len(groups) == 2
    check_partition(groups, 31)
    long_group, short_group = groups
    assert 15 in long_group.tolist() and len(long_group) == 8  # min_rows forced its size
    assert len(short_group) == 23 and padding_waste(lengths[short_group]) == 0.0
    cells = sum(len(g) * lengths[g].max() for g in groups)
    assert cells < len(lengths) * lengths.max() / 3


def test_waste_bound_holds_on_random_batches():
    rng, splits = np.random.default_rng(0), 0
    for _ in range(200):
        n = int(rng.integers(1, 129))
        # a crowd of short texts and a spread of longer ones
        lengths = np.concatenate([rng.integers(1, 20, n // 2), rng.integers(1, 257, n - n // 2)])
        rng.shuffle(lengths)
        groups = length_groups(lengths, max_waste=0.4, min_rows=8)
        check_partition(groups, n)
        if len(groups) == 1:
            assert groups[0].tolist() == list(range(n))
            continue
        splits += 1
        assert all(len(g) >= 8 for g in groups)
        for i, group in enumerate(groups):
            forced = len(group) == 8 or i == len(groups) - 1
            assert padding_waste(lengths[group]) <= 0.4 or forced
        longest = [lengths[g].max() for g in groups]
        assert longest == sorted(longest, reverse=True)  # contiguous in length, longest first
        assert sum(len(g) * m for g, m in zip(groups, longest)) < n * lengths.max()
    assert splits > 50


def test_grouping_settings_are_checked():
    with pytest.raises(ConfigError, match=r"max_padding .*min_group_rows"):
        Batcher([lambda b: b], max_padding=1.5, min_group_rows=0)


class RecordingEngine:
    """An 'encoder': each row's output is (sum of real ids, real length); records the
    (rows, width) of every call."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        self.shapes.append(ids.shape)
        return np.stack([(ids * mask).sum(1), mask.sum(1)], axis=1).astype(np.float32)


def run_batch(requests: list[dict[str, np.ndarray]], engine=None, **options) -> tuple:
    """Submit requests together through a real Batcher; (results, engine shapes, calls, the
    executions the statistics heard of)."""

    async def main():
        calls: list[int] = []
        batcher = Batcher(
            [engine or recording],
            max_batch_size=64,
            max_wait_ms=50,
            adaptive_wait=False,  # the requests are queued together: one batch
            stats=BatchStats(on_calls=calls.append, on_executed=executions.append),
            **options,
        )
        await batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(r) for r in requests), return_exceptions=True
        )
        await batcher.stop()
        return results, recording.shapes, calls, executions

    recording = RecordingEngine()
    executions: list = []
    return asyncio.run(main())


def test_a_mixed_batch_runs_as_one_call_per_length_group():
    # 30 short texts and one long one in 16 requests of 2 (the long one in the middle)
    lengths = [10 + i % 3 for i in range(31)]
    lengths.insert(15, 200)
    requests = [texts(*lengths[i : i + 2], offset=100 * i) for i in range(0, 32, 2)]
    results, shapes, calls, executions = run_batch(requests)
    assert calls == [2] and len(shapes) == 2
    assert sorted(shapes) == [(8, 200), (24, 12)]  # each padded to its own group's longest
    [execution] = executions  # statistics: one execution per group, of its rows
    assert sorted(rows for rows, _ in execution.calls) == [8, 24]
    assert (execution.requests, execution.rows) == (16, 32)
    unsplit, whole, one_call, _ = run_batch(requests, max_padding=1.0)
    assert one_call == [1] and whole == [(32, 200)]
    for got, want, request in zip(results, unsplit, requests):
        assert np.array_equal(got, want)  # each caller gets its own rows, in its order
        expected_sum = (request["input_ids"] * request["attention_mask"]).sum(1)
        assert got[:, 0].tolist() == expected_sum.tolist()


def test_similar_lengths_and_images_run_as_one_call():
    requests = [texts(20 + i % 4, 21, offset=i) for i in range(16)]
    _, shapes, calls, _ = run_batch(requests)
    assert calls == [1] and shapes == [(32, 23)]

    async def images():
        seen, calls = [], []
        batcher = Batcher(
            [lambda b: seen.append(b.shape) or b[:, :1]],
            max_batch_size=64,
            stats=BatchStats(on_calls=calls.append),
        )
        await batcher.start()
        out = await batcher.submit(np.zeros((32, 5), dtype=np.float32))
        await batcher.stop()
        return seen, calls, out

    seen, calls, out = asyncio.run(images())
    assert seen == [(32, 5)] and calls == [1] and out.shape == (32, 1)


def test_a_group_that_breaks_the_row_contract_fails_every_caller():
    def engine(batch: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros((len(batch["input_ids"]), 1), dtype=np.float32)
        return out[:-1] if batch["input_ids"].shape[1] == 200 else out

    lengths = [10] * 24 + [200] * 8  # groups: 8 long + 8 short (width 200), 16 short
    results, _, calls, _ = run_batch([texts(*lengths[:16]), texts(*lengths[16:])], engine)
    assert calls == []  # the batch failed: nothing to count
    assert all(isinstance(r, RuntimeError) and "returned 15 rows for 16" in str(r) for r in results)
