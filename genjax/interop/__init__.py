"""Weights from and to other frameworks' formats (Hugging Face GPT-2: gpt2.py)."""
