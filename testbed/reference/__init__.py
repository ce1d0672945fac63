"""Reference builds: drop-in stand-ins for upstream CNI images (stdlib + pyroute2)."""
