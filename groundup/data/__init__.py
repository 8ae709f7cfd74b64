"""The pretraining data pipeline: read, filter, deduplicate, tokenize into shards, load."""
