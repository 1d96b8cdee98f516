"""Training: the loop (trainer), DeepSpeed wrapping (distributed, the only deepspeed import) and checkpoints."""
