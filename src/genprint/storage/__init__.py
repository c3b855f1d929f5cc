"""On-disk formats: the attributor directory (card, safetensors weights, arrays)."""
