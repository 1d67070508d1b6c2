"""A trained generator as one consolidated safetensors file, and the tokenizer loaded back from it."""
