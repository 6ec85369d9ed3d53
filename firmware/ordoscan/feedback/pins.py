"""The feedback's pins: the gpiozero pin factory named by gpio.pin_factory, and claiming a pin
with an error that names the key and the pin."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from gpiozero.exc import GPIOPinInUse, PinInvalidPin

from ordoscan.errors import GpioError

log = logging.getLogger("ordoscan.feedback")

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}
# gpio.pin_factory = "mock" loads these by name through gpiozero's own entry-point group,
# so the kiosk never imports the desk's mock pins (ordoscan.devtools registers them).
MOCK_ENTRY_POINTS = {False: "ordoscan-mock", True: "ordoscan-mock-pwm"}


def _mock_factory(pwm: bool) -> Any:
    name = MOCK_ENTRY_POINTS[pwm]
    for ep in entry_points(group="gpiozero_pin_factories", name=name):
        return ep.load()()
    # an install without its entry points (an old editable install): gpiozero's plain mocks
    log.warning("the %s pin factory is not registered (reinstall ordoscan); "
                "using gpiozero's MockFactory, untraced", name)
    from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

    return MockFactory(pin_class=MockPWMPin if pwm else MockPin)


def make_pin_factory(name: str, *, pwm: bool = False) -> Any:
    """The gpiozero pin factory named by gpio.pin_factory; pwm asks mock pins for PWM."""
    if name == "mock":
        return _mock_factory(pwm)
    if name not in _FACTORIES:
        known = ", ".join(["mock", *_FACTORIES])
        raise GpioError(f"gpio.pin_factory = {name!r}: unknown pin factory (known: {known})")
    module, cls = _FACTORIES[name]
    try:
        factory = getattr(importlib.import_module(module), cls)()
    except ImportError as e:
        raise GpioError(
            f"gpio.pin_factory = {name!r}: cannot be loaded ({e}); on a Raspberry Pi install "
            "python3-lgpio, on a desk set gpio.pin_factory = \"mock\""
        ) from None
    except Exception as e:  # each library raises its own type (lgpio.error, RuntimeError, OSError)
        raise GpioError(
            f"gpio.pin_factory = {name!r}: cannot open the GPIO chip ({type(e).__name__}: {e}); "
            "is this a Raspberry Pi, and may this user use /dev/gpiochip*?"
        ) from None
    return factory


def claim(name: str, pin: int, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except GPIOPinInUse as e:
        why = f"already in use ({e})"
    except PinInvalidPin as e:
        why = f"not a GPIO pin of this board ({e})"
    except Exception as e:  # the pin libraries' own types (lgpio.error, OSError, ...)
        text = str(e) or type(e).__name__
        if "in use" in text or "busy" in text.lower():  # lgpio says "GPIO busy"
            why = f"already in use ({text})"
        else:
            why = f"cannot be claimed ({type(e).__name__}: {text})"
    raise GpioError(f"gpio.{name} = BCM pin {pin}: {why}") from None
