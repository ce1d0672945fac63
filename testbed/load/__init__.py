"""Load: Locust (in its own processes inside pods and containers), iperf3, cgroup sampling."""
