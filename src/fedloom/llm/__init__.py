"""Language-model tooling for federated LLM tuning (optional extra ``llm``): tokenizers (tokenizer.py),
pretraining a small GPT-2 (pretrain.py), greedy generation and Rouge-L (evaluate.py). Nothing here is imported
by ``fedloom.cli`` or ``fedloom.run``; transformers, tokenizers and rouge-score load through
``fedloom.extras.require`` when used."""
