# The bare-Twisted anchor: the least a Twisted server can do for the same lines as notifd,
# with no database, no sessions and no state beyond a set of subscribers. It shows what
# the framework itself costs, so notifd's figures can be read as "Twisted + notifd".
#
#   notif     -> "will send notifs", and the connection is a subscriber
#   publish   -> "notif: classified" written to every subscriber (plain transport.write)
#   random?   -> a random integer
#   OK        -> nothing
#
# Run: python -m bench.anchor PORT_FILE  (writes the port it listens on to PORT_FILE)
from __future__ import annotations

import random
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

NOTIFICATION = b"notif: classified\r\n"


class Anchor(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, subscribers: set) -> None:
        self.subscribers = subscribers

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line == b"random?":
            self.transport.write(b"%d\r\n" % random.getrandbits(31))
        elif line == b"notif":
            self.subscribers.add(self)
            self.transport.write(b"will send notifs\r\n")
        elif line == b"publish":
            for subscriber in self.subscribers:
                subscriber.transport.write(NOTIFICATION)
        elif line != b"OK":
            self.transport.write(b"ERR unknown command\r\n")

    def connectionLost(self, reason=None) -> None:
        self.subscribers.discard(self)


def main() -> None:
    port_file = sys.argv[1]
    subscribers: set = set()
    factory = Factory.forProtocol(lambda: Anchor(subscribers))
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
    with open(port_file, "w") as f:
        f.write(str(port.getHost().port))
    reactor.run()


if __name__ == "__main__":
    main()
