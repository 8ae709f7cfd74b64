"""Pretraining: optimizers (Muon + AdamW), schedules, the depth dial, FLOPs/MFU, distributed set-up, the loop."""
