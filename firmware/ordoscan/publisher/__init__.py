"""The publisher stage: the outbox relayed to the broker, plus status, telemetry and commands.

- `window`: the delivery window, pure bookkeeping driven by the clock;
- `link`: one paho client per connection, and link liveness;
- `side_channel`: status, telemetry, replies and incoming commands;
- `connection`: the paho client as the publisher thread drives it, and paho's callbacks;
- `service`: the `Publisher` service, whose one thread owns the connection.
"""

from ordoscan.publisher.service import Publisher

__all__ = ["Publisher"]
