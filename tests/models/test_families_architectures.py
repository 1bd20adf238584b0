"""The architectures behind --model-family (HtFLlib, Zhang et al., KDD 2025): torchvision's parameter names and
shapes (a hand-written table, and torchvision itself where it imports), HtFLlib's feature-dimension
convention, its heads, 28x28 / 1-channel inputs, and batch normalisation under vmap."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from fedloom.models.families import FAMILIES, build_family
from fedloom.models.families.architectures import ARCHITECTURES, build_head
from fedloom.models.families.common import FeaturePool


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


#: torchvision's ResNet-18 parameters, written out by hand from the paper's Table 1 (BasicBlock 3x3 convs, 1x1
#: stride-2 projections) in torchvision's naming; ``fc`` is absent (replaced by the feature pooling).
RESNET18 = {"conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.bias": (64,)}
for _stage, (_cin, _c) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], start=1):
    for _b in range(2):
        _p = f"layer{_stage}.{_b}."
        RESNET18.update({_p + "conv1.weight": (_c, _cin if _b == 0 else _c, 3, 3), _p + "bn1.weight": (_c,),
                         _p + "bn1.bias": (_c,), _p + "conv2.weight": (_c, _c, 3, 3), _p + "bn2.weight": (_c,),
                         _p + "bn2.bias": (_c,)})
    if _stage > 1:
        RESNET18.update({f"layer{_stage}.0.downsample.0.weight": (_c, _cin, 1, 1),
                         f"layer{_stage}.0.downsample.1.weight": (_c,), f"layer{_stage}.0.downsample.1.bias": (_c,)})


def test_resnet18_names_and_shapes_match_a_hand_written_table() -> None:
    assert shapes(ARCHITECTURES["resnet18"]((3, 32, 32), 512, None)) == RESNET18


#: parameter counts of torchvision's ImageNet models (its documentation: resnet18 11,689,512; mobilenet_v2
#: 3,504,872; googlenet 6,624,904) less their 1000-class classifier (fc: 513,000; 1,281,000; 1,025,000)
@pytest.mark.parametrize("name, count", [("resnet18", 11_689_512 - 513_000), ("mobilenet_v2", 3_504_872 - 1_281_000),
                                         ("googlenet", 6_624_904 - 1_025_000), ("resnet34", 21_797_672 - 513_000),
                                         ("resnet50", 25_557_032 - 2_049_000)])
def test_parameter_counts_equal_torchvision_less_the_classifier(name: str, count: int) -> None:
    model = ARCHITECTURES[name]((3, 32, 32), 512, None)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [
    ("resnet101", 44_549_160 - 2_049_000), ("resnet152", 60_192_808 - 2_049_000),
    # ViT-B at image_size 32: torchvision's 224 count, less the head (769,000), with 2x2+1 (B/16) or 1+1 (B/32)
    # position embeddings instead of 14x14+1 / 7x7+1
    ("vit_b_16", 86_567_656 - 769_000 - (197 - 5) * 768), ("vit_b_32", 88_224_232 - 769_000 - (50 - 2) * 768)])
def test_parameter_counts_of_the_full_size_members(name: str, count: int) -> None:
    model = ARCHITECTURES[name]((3, 32, 32), 512, None)
    assert sum(p.numel() for p in model.parameters()) == count


def torchvision_or_skip():  # type: ignore[no-untyped-def]
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # a CUDA build beside CPU torch raises RuntimeError, not ImportError
        pytest.skip(f"torchvision does not import here: {type(exc).__name__}")
    import torchvision
    return torchvision


@pytest.mark.parametrize("name, classifier", [("resnet18", "fc"), ("resnet50", "fc"), ("googlenet", "fc"),
                                              ("mobilenet_v2", "classifier"), ("vit_b_16", "heads"),
                                              ("vit_b_32", "heads")])
def test_names_and_shapes_equal_torchvision_where_it_imports(name: str, classifier: str) -> None:
    tv = torchvision_or_skip()
    kwargs = {"googlenet": {"aux_logits": False, "init_weights": True}, "vit_b_16": {"image_size": 32},
              "vit_b_32": {"image_size": 32}}.get(name, {})  # HtFLlib's arguments
    reference = getattr(tv.models, name)(weights=None, **kwargs)
    expected = {n: s for n, s in shapes(reference).items() if not n.startswith(classifier + ".")}
    assert shapes(ARCHITECTURES[name]((3, 32, 32), 512, None)) == expected


@pytest.mark.parametrize("name, classifier, width, kwargs", [
    ("resnet18", "fc", 512, {}), ("mobilenet_v2", "classifier", 1280, {}),
    ("googlenet", "fc", 1024, {"aux_logits": False, "init_weights": True, "dropout": 0.0}),
    ("vit_b_32", "heads", 768, {"image_size": 32})])
def test_torchvision_weights_load_and_give_the_same_features(name: str, classifier: str, width: int,
                                                             kwargs: dict) -> None:
    tv = torchvision_or_skip()
    reference = getattr(tv.models, name)(weights=None, **kwargs).train()  # train mode: batch statistics, as ours
    setattr(reference, classifier, torch.nn.Identity())
    ours = ARCHITECTURES[name]((3, 32, 32), width, None)  # D = the native width: the pooling is the identity
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not missing and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in unexpected)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_feature_pool_averages_to_the_common_dimension() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert FeaturePool(2)(x).tolist() == [[1.5, 3.5]]  # HtFLlib's AdaptiveAvgPool1d: windows (1, 2), (3, 4)
    assert FeaturePool(8)(x).tolist() == [[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]]  # narrower bodies repeat
    assert FeaturePool(4)(x) is x


@pytest.mark.parametrize("name", ["cnn", "googlenet", "mobilenet_v2", "resnet4", "resnet10", "hcnn1",
                                  "hcnn2-1024-512"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_every_body_gives_the_common_feature_dimension(name: str, shape: tuple[int, ...]) -> None:
    body = ARCHITECTURES[name](shape, 96, None)
    assert body(torch.randn(2, *shape)).shape == (2, 96)


def test_text_and_mlp_bodies_give_the_common_feature_dimension() -> None:
    tokens = torch.randint(0, 50, (3, 12))
    for name in ("fasttext", "text-logreg", "lstm", "gru", "bilstm", "transformer-l2-h4"):
        assert ARCHITECTURES[name]((12,), 32, 50)(tokens).shape == (3, 32), name
    assert ARCHITECTURES["amazon-mlp-1000-500"]((64,), 32, None)(torch.randn(3, 64)).shape == (3, 32)


def test_heads_follow_htfllib() -> None:
    assert shapes(build_head("linear", 512, 10)) == {"weight": (10, 512), "bias": (10,)}
    assert shapes(build_head("vit", 512, 10)) == {"0.weight": (768, 512), "0.bias": (768,), "2.weight": (10, 768),
                                                 "2.bias": (10,)}
    head = build_head("htc-512-256", 512, 10)
    assert shapes(head) == {"fc.0.weight": (256, 512), "fc.0.bias": (256,), "fc.2.weight": (10, 256),
                            "fc.2.bias": (10,)}
    assert (head(torch.randn(5, 512)) >= 0).all()  # HtFLlib's Head ends with a ReLU


def test_members_are_assigned_round_robin() -> None:
    htfe8 = build_family("HtFE-img-8", {})
    assert htfe8.labels() == ("cnn", "googlenet", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101",
                              "resnet152")
    htc = build_family("HtFE-img-8-HtC-img-4", {}).labels()
    assert htc[0] == "cnn+htc-512" and htc[5] == "resnet50+htc-512-512" and len(htc) == 8
    assert build_family("Res34-HtC-img-4", {}).labels() == ("resnet34+htc-512", "resnet34+htc-512-512",
                                                            "resnet34+htc-512-256", "resnet34+htc-512-128")
    assert build_family("HtM-img-10", {}).labels()[-2:] == ("vit_b_16+vit", "vit_b_32+vit")
    assert len(build_family("HCNNs8", {}).labels()) == 8


def test_every_registered_family_names_known_architectures() -> None:
    assert len(FAMILIES.names()) == 19
    for name, cls in FAMILIES.items():
        assert cls.members and all(m in ARCHITECTURES for m in cls.members), name


@pytest.mark.slow  # ~8 s: torch's first vmap over batch_norm in a process pays a one-time set-up
def test_batch_norm_members_train_per_client_under_vmap() -> None:
    """The vectorized engine stacks clients' parameters: BN must use each client's batch, no shared buffers."""
    model = ARCHITECTURES["resnet4"]((1, 16, 16), 16, None)
    params = {n: p.detach() for n, p in model.named_parameters()}
    stacked = {n: torch.stack([p, p * 1.1]) for n, p in params.items()}
    x = torch.randn(2, 3, 1, 16, 16)
    loss = lambda w, xb: functional_call(model, w, (xb,)).square().mean()  # noqa: E731
    together = vmap(grad(loss))(stacked, x)
    for slot in range(2):
        alone = grad(loss)({n: t[slot] for n, t in stacked.items()}, x[slot])
        for name in ("conv1.weight", "bn1.weight", "layer1.0.bn2.bias"):
            torch.testing.assert_close(together[name][slot], alone[name])
    assert not list(model.buffers())  # no running statistics to leak between clients


def test_small_and_grayscale_images_are_adapted_without_parameters() -> None:
    from fedloom.models.families.common import PadTo, ToChannels

    x = torch.ones(2, 1, 28, 28)
    padded = PadTo(32)(x)
    assert padded.shape == (2, 1, 32, 32) and padded.sum() == x.sum() and padded[0, 0, 2, 2] == 1  # centred
    assert PadTo(32)(torch.ones(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    rgb = ToChannels(3)(x)
    assert rgb.shape == (2, 3, 28, 28) and torch.equal(rgb[:, 2], x[:, 0])


def test_a_single_sample_batch_at_one_by_one_resolution_gives_the_bias() -> None:
    """A ResNet on 32x32 reaches 1x1 in its last stage: a last training batch of one sample must not fail."""
    from fedloom.models.families.common import batch_norm_2d

    norm = batch_norm_2d(3)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert norm(torch.randn(1, 3, 1, 1)).flatten().tolist() == [1.0, 2.0, 3.0]
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(norm(x), torch.nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, True))
    body = ARCHITECTURES["resnet10"]((3, 32, 32), 512, None)
    assert torch.isfinite(body(torch.randn(1, 3, 32, 32))).all()
