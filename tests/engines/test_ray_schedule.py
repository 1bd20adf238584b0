"""Parrot-style scheduling of the Ray engine (fedloom.engines.ray_schedule): needs no Ray."""

import pytest

from fedloom.engines.ray_schedule import CostModel, idle_fraction, schedule, schedule_in_order


def test_before_any_measurement_the_cost_is_samples_times_epochs() -> None:
    model = CostModel(work=[10.0, 30.0, 20.0])
    assert [model.cost(c, 0) for c in range(3)] == [10.0, 30.0, 20.0]


def test_the_schedule_minimises_the_makespan_by_earliest_finish() -> None:
    model = CostModel(work=[3.0, 5.0, 2.0, 5.0, 4.0, 3.0])
    shares = schedule(range(6), [0, 1], model)
    # by hand, heaviest first to the earliest finish: 5(c1)->w0, 5(c3)->w1, 4(c4)->w0 (9), 3(c0)->w1 (8),
    # 3(c5)->w1 (11), 2(c2)->w0 (11)
    assert shares == {0: [1, 2, 4], 1: [0, 3, 5]}


def test_a_slow_worker_gets_less_work_once_measured() -> None:
    model = CostModel(work=[1.0] * 6)
    model.observe(0, {0: 1.0, 1: 1.0})  # 1 s per unit of work
    model.observe(1, {2: 2.0, 3: 2.0})  # 2 s per unit: half as fast
    shares = schedule(range(6), [0, 1], model)
    assert (len(shares[0]), len(shares[1])) == (4, 2)  # finish times 4 s and 4 s
    assert model.factor == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}


def test_a_client_that_trains_slower_than_its_size_says_is_learned() -> None:
    model = CostModel(work=[1.0, 1.0])
    model.observe(0, {0: 1.0, 1: 3.0})  # speed 2 s/unit; client 1 three times client 0
    assert model.speed[0] == pytest.approx(2.0)
    assert model.factor[1] / model.factor[0] == pytest.approx(3.0)
    model.observe(0, {0: 1.0, 1: 1.0})  # moving average of the newest and the old estimate
    assert model.speed[0] == pytest.approx(0.5 * 2.0 + 0.5 * 1.0)


def test_clients_with_saved_state_stay_on_their_worker() -> None:
    model = CostModel(work=[5.0, 5.0, 5.0, 1.0])
    shares = schedule([0, 1, 2, 3], [0, 1], model, pinned={0: 0, 1: 0, 2: 0})
    assert shares == {0: [0, 1, 2], 1: [3]}


def test_idle_fraction_by_hand() -> None:
    # makespan 4: worker 0 idles 0, worker 1 idles 2, worker 2 had no client (idles 4) -> 6 / 12
    assert idle_fraction({0: 4.0, 1: 2.0}, workers=3) == pytest.approx(0.5)
    assert idle_fraction({0: 3.0, 1: 3.0}, workers=2) == 0.0


def test_in_order_the_free_clients_form_contiguous_runs_of_least_makespan() -> None:
    model = CostModel(work=[4.0, 1.0, 1.0, 1.0, 1.0, 4.0])
    shares = schedule_in_order([0, 1, 2, 3, 4, 5], [0, 1], model)
    # the cuts of [4 1 1 1 1 4]: 4+1+1 | 1+1+4, makespan 6 (any other cut gives 7 or more)
    assert shares == {0: [0, 1, 2], 1: [3, 4, 5]}


def test_in_order_follows_the_cohort_order_and_worker_order() -> None:
    model = CostModel(work=[1.0] * 6)
    shares = schedule_in_order([5, 0, 3, 1, 4, 2], [1, 0], model)  # worker 1 first, cohort order as given
    assert shares == {1: [0, 3, 5], 0: [1, 2, 4]}


def test_in_order_pinned_clients_stay_and_the_free_ones_fill_around_them() -> None:
    model = CostModel(work=[3.0, 1.0, 1.0, 1.0])
    shares = schedule_in_order([0, 1, 2, 3], [0, 1], model, pinned={0: 0})
    assert shares == {0: [0], 1: [1, 2, 3]}  # worker 0 already carries 3
