"""The AR probe: token caching, a class-conditional GPT, generation and representation metrics."""
