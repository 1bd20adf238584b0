"""Aggregation with hand-computed expectations."""

import torch

from fedloom.algorithms.base import ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.uploads import UploadAccumulator


def test_weighted_mean_by_hand() -> None:
    acc = UploadAccumulator()
    acc.add(0, {"w": torch.tensor([1.0, 2.0])}, weight=1)
    acc.add(1, {"w": torch.tensor([3.0, 4.0])}, weight=3)
    mean = acc.finish().weighted_mean()
    # (1*[1,2] + 3*[3,4]) / 4 = [10/4, 14/4]
    assert torch.allclose(mean["w"], torch.tensor([2.5, 3.5]))
    assert mean["w"].dtype == torch.float32


def test_clients_that_upload_nothing_do_not_count() -> None:
    acc = UploadAccumulator()
    acc.add(0, None, weight=100)
    acc.add(1, {"w": torch.tensor([2.0])}, weight=5)
    uploads = acc.finish()
    assert uploads.count == 1 and uploads.total_weight == 5
    assert torch.equal(uploads.weighted_mean()["w"], torch.tensor([2.0]))
    assert UploadAccumulator().finish().weighted_mean() is None


def test_partial_sums_merge_to_the_same_mean() -> None:
    uploads = [({"w": torch.tensor([float(i), -float(i)])}, float(i + 1)) for i in range(5)]
    whole = UploadAccumulator()
    left, right = UploadAccumulator(), UploadAccumulator()
    for i, (u, w) in enumerate(uploads):
        whole.add(i, u, w)
        (left if i < 2 else right).add(i, u, w)
    left.merge(right)
    assert torch.equal(left.finish().weighted_mean()["w"], whole.finish().weighted_mean()["w"])
    # Σ i(i+1) / Σ (i+1) = (0+2+6+12+20)/15 = 40/15
    assert torch.allclose(whole.finish().weighted_mean()["w"], torch.tensor([40 / 15, -40 / 15]))


def test_stacked_uploads_with_bool_leaves_sum_as_one_by_one() -> None:
    """A pack's stacked upload may carry a class mask (FedGC's held classes): summed in float64 as ``add`` does."""
    held = torch.tensor([[True, False], [True, True]])
    stacked, single = UploadAccumulator(keep_all=True), UploadAccumulator(keep_all=True)
    stacked.add_stacked([0, 1], {"held": held, "w": torch.ones(2, 3)}, torch.tensor([2.0, 1.0]))
    for cid in (0, 1):
        single.add(cid, {"held": held[cid], "w": torch.ones(3)}, [2.0, 1.0][cid])
    assert torch.equal(stacked.weighted_sum["held"], single.weighted_sum["held"])
    assert stacked.weighted_sum["held"].tolist() == [3.0, 1.0]
    assert stacked.finish().items[1][1]["held"].dtype == torch.bool


def test_keep_all_returns_uploads_sorted_by_client() -> None:
    acc = UploadAccumulator(keep_all=True)
    acc.add(5, {"w": torch.tensor([1.0])}, 1)
    acc.add(2, {"w": torch.tensor([2.0])}, 1)
    assert [cid for cid, _, _ in acc.finish().all()] == [2, 5]


def test_fedavg_server_step_applies_weighted_mean_delta() -> None:
    server = ServerState(params={"w": torch.tensor([1.0, 1.0])})
    acc = UploadAccumulator()
    acc.add(0, {"w": torch.tensor([2.0, 0.0])}, 30)  # client model [3, 1]
    acc.add(1, {"w": torch.tensor([-1.0, 4.0])}, 10)  # client model [0, 5]
    result = FedAvg().server_update(server, acc.finish())
    # sample-weighted average of client models: (30*[3,1] + 10*[0,5]) / 40 = [2.25, 2.0]
    assert torch.allclose(result.broadcast.params["w"], torch.tensor([2.25, 2.0]))
    assert result.state.round == 1


def test_personal_broadcast_reaches_only_its_client_and_counts_its_bytes() -> None:
    from fedloom.algorithms.base import Broadcast

    shared = {"w": torch.zeros(4)}  # 16 bytes
    b = Broadcast(params=shared, personal={0: {"m": torch.zeros(2)}, 1: {"m": torch.ones(3)}})
    assert torch.equal(b.for_client(1).personal["m"], torch.ones(3))
    assert b.for_client(5).personal is None
    assert b.nbytes(0) == 16 + 8 and b.nbytes(1) == 16 + 12 and b.nbytes(7) == 16
    assert Broadcast(params=shared).nbytes(3) == 16
