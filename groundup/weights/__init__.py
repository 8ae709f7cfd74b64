"""Weight loaders: GGUF, Hugging Face safetensors, groundup checkpoints."""
