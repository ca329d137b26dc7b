"""The in-process model. Nothing here imports torch until the local provider is enabled."""
