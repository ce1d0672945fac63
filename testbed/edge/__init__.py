"""The cluster's edge: an "internet" network, the ingress controller, an outside client, egress.

Names and labels are in `names`; `up` starts the edge, `inspect` reports it.
"""
