"""ordoscan: reads the QR code of an ordonnance numérique and relays it over MQTT.

Data flow, one module per stage:
camera → decoder → classifier → dedupe → outbox → feedback → publisher.
"""

__version__ = "0.1.0"
