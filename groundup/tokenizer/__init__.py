"""Tokenizers: GGUF/HF vocabularies (BPE and SentencePiece-style), chat templates."""
