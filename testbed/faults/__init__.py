"""Faults: node, link, partition, rate, CNI daemon and datastore faults, undone at their end."""
