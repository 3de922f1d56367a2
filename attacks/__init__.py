"""Attack catalog (training-time poisoning and test-time attacks). Each module registers itself."""
