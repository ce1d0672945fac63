"""The cluster as found from Docker labels, and the client for each node's agent."""
