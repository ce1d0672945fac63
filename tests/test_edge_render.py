"""Ingress routes and nginx config from scenario rules (no Docker: pure rendering)."""

from __future__ import annotations

import json

from testbed.edge import ingress
from testbed.scenario import Scenario


def _scenario() -> Scenario:
    return Scenario.model_validate({
        "nodes": 2,
        "deployments": [{"name": "web", "replicas": 2, "labels": {"app": "web"}},
                        {"name": "api", "replicas": 1, "labels": {"app": "api"}}],
        "services": [{"name": "web", "selector": {"app": "web"},
                      "ports": [{"port": 80, "targetPort": 8080}]},
                     {"name": "api", "type": "NodePort", "selector": {"app": "api"},
                      "ports": [{"port": 81, "targetPort": 8080, "nodePort": 30081}]}],
        "ingress": [{"host": "shop.local", "paths": [{"path": "/", "service": "web", "port": 80},
                                                     {"path": "/api/", "service": "api",
                                                      "port": 81}]},
                    {"host": "shop.local", "paths": [{"path": "/", "service": "api",
                                                      "port": 81}]}],
    })


PODS = [{"name": "web-0", "ip": "10.244.1.2/24"}, {"name": "web-1", "ip": "10.244.2.2/24"},
        {"name": "api-0", "ip": "10.244.1.3/24"}]


def test_a_clusterip_wins_over_endpoints_and_duplicates_keep_the_first_rule() -> None:
    s = _scenario()
    routes = ingress.routes(s, {"web": "10.96.0.10"}, ingress.endpoints(s, PODS))
    assert [(r.host, r.path, r.service, r.via, r.upstream) for r in routes] == [
        ("shop.local", "/", "web", "clusterIP", ("10.96.0.10:80",)),
        ("shop.local", "/api", "api", "endpoints", ("10.244.1.3:8080",)),
    ]


def test_config_has_a_404_default_server_prefix_locations_and_no_keepalive_to_a_clusterip(
        ) -> None:
    s = _scenario()
    conf = ingress.render(ingress.routes(s, {"web": "10.96.0.10"}, ingress.endpoints(s, PODS)))
    assert "listen 80 default_server reuseport;\n        server_name _;\n" \
           "        location / { return 404; }" in conf
    assert conf.count("server_name shop.local;") == 1
    assert "location / { proxy_pass http://default-web-80/; }" in conf
    assert "location = /api { proxy_pass http://default-api-81/; }" in conf
    assert "location /api/ { proxy_pass http://default-api-81/; }" in conf
    web = conf.split("upstream default-web-80 {")[1].split("}")[0]
    api = conf.split("upstream default-api-81 {")[1].split("}")[0]
    assert "server 10.96.0.10:80;" in web and "keepalive" not in web
    assert "server 10.244.1.3:8080;" in api and "keepalive 32;" in api
    assert conf.count("{") == conf.count("}")


def test_a_service_without_backends_answers_503_and_a_host_without_slash_404s() -> None:
    s = _scenario()
    s.ingress[0].paths = s.ingress[0].paths[1:]
    s.ingress = s.ingress[:1]
    conf = ingress.render(ingress.routes(s, {}, {}))
    assert "upstream" not in conf
    assert "location = /api { return 503; }" in conf
    host = conf.split("server_name shop.local;")[1]
    assert "location / { return 404; }" in host


def test_the_label_says_what_each_route_and_nodeport_must_reach() -> None:
    s = _scenario()
    doc = json.loads(ingress.describe(ingress.routes(s, {}, ingress.endpoints(s, PODS)), s))
    assert doc["services"] == {"web": {"deployments": ["web"], "nodePorts": []},
                               "api": {"deployments": ["api"], "nodePorts": [30081]}}
    assert doc["routes"][0]["upstream"] == ["10.244.1.2:8080", "10.244.2.2:8080"]
