"""FedIT's functional LoRA is peft's LoRA: the same adapters (peft's A [r, in] and B [out, r] written as fedloom's
L = Aᵀ and R = Bᵀ on GPT-2's Conv1D weights [in, out]) give the same logits through peft's module wrappers and
through ``fedit.merged`` applied with ``torch.func.functional_call``. Skips without peft and transformers."""

from __future__ import annotations

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from fedloom.algorithms.fedit import adapted_names, merged  # noqa: E402

RANK, ALPHA = 4, 16.0


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_fedit_merged_weights_give_peft_lora_logits() -> None:
    base_model = tiny_gpt2()
    base = {name: p.detach().clone() for name, p in base_model.named_parameters()}
    names = adapted_names(base, "c_attn")
    assert len(names) == 2  # one c_attn per block

    wrapped = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0))
    gen = torch.Generator().manual_seed(1)
    adapters = {}
    for name in names:
        module = wrapped.get_submodule("base_model.model." + name.removesuffix(".weight"))
        a = torch.randn(module.lora_A["default"].weight.shape, generator=gen) * 0.3  # [r, in]
        b = torch.randn(module.lora_B["default"].weight.shape, generator=gen) * 0.3  # [out, r]
        with torch.no_grad():
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
        adapters[f"{name}/l"], adapters[f"{name}/r"] = a.T, b.T

    tokens = torch.randint(0, 50, (3, 12), generator=gen)
    ours = torch.func.functional_call(base_model, merged(base, adapters, ALPHA / RANK), (tokens,)).logits
    theirs = wrapped(input_ids=tokens).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    plain = base_model(tokens).logits
    assert not torch.allclose(plain, theirs, atol=1e-3)  # the adapters matter: the test can fail


def test_peft_and_fedit_both_start_from_the_base_model() -> None:
    wrapped = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0))
    tokens = torch.arange(12).reshape(1, 12)
    assert torch.allclose(wrapped(input_ids=tokens).logits, tiny_gpt2()(tokens).logits, atol=1e-6)
