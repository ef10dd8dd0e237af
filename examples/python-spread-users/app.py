"""The component's entry point: the `balancer` interface of world `strategy`, bound to
`spread.rank`. componentize-py generates `wit_world` from `wit/zonebroker.wit`."""

from wit_world import exports
from wit_world.imports import log

import spread


class Balancer(exports.Balancer):
    def rank(self, request, candidates):
        ranking = spread.rank(request, candidates)
        if not request.same_zone:
            log.log(log.Level.DEBUG, f"ranked {len(ranking)} candidates of another zone")
        return ranking
