"""Shared pieces of every generative (SID-generating LLM) method, each written once:
backbone factory + tokenizer (backbone.py), the prompt and SFT tasks (prompts.py), the training
loop on accelerate (training.py), trie-constrained beam search (decoding.py), GRPO (grpo.py),
and a base class that wires them for a method (method.py)."""
