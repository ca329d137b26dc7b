"""The history stores: one contract on every backend, and what surrounds it."""
