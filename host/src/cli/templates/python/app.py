"""The component's entry point: the `balancer` interface of world `strategy`
(wit/zonebroker.wit), bound to `strategy.rank`. `componentize-py ... bindings .` generates
`wit_world` from the WIT."""

from wit_world import exports

import strategy


class Balancer(exports.Balancer):
    def rank(self, request, candidates):
        return strategy.rank(request, candidates)
