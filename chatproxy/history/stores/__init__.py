"""One history backend per module; open_store imports only the chosen one."""
