"""The inference engine: KV cache, sampling, batched generation."""
