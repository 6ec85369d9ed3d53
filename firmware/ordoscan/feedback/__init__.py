"""LEDs and buzzer (SPEC §4): one small state machine, driven by a worker thread.

- `machine`: the StateMachine, the timings and the sounds (pure: events and time in);
- `pins`: the gpiozero pin factory and claiming the pins;
- `service`: `Feedback`, the service whose worker thread drives the pins.

Every public call of `Feedback` only enqueues an event and returns, so the
pipeline never waits on a light or a sound. The worker applies the events to
a `StateMachine` (a function of events and time, with no threads and no pins)
and writes the levels it asks for to gpiozero devices, waking at the next
edge. The timing is done here rather than with gpiozero's blink()/beep() so
that one clock schedules every channel, including the notes of a passive
buzzer, and so that the logic can be checked with a fake clock.

What each LED shows, highest priority first:

- green: identify blinking > good-read dip (off 150 ms, then on again) >
  on while booting and once ready;
- amber: identify blinking > on while booting or while scans are queued
  because the broker is unreachable;
- red: identify blinking > refused (on for 1 s) > blinking while any fault
  is active > on while booting, otherwise off.

So a good read during a fault still dips green and beeps while red keeps
blinking; a refusal shows red for 1 s and then gives red back to the fault
blinking (or off); identify overlays the three LEDs, then hands them back to
whatever the current state is. Identify is silent and never mutes a sound.

A good read during another's dip gets a dip of its own once that one has ended and green
has been on again for DIP_GAP_S, as its beep waits for the buzzer: two reads close together
show as two blinks and two beeps, never one. A dip that would start more than
MAX_SOUND_DELAY_S late is skipped (its beep, if any, still sounds).

Sounds never cut each other: a sound starts after the previous one has
ended, with a short gap, and one that would start more than
MAX_SOUND_DELAY_S late is skipped (its LEDs still show the event). A fault
beeps when its name becomes active; the same fault beginning again within
FAULT_REBEEP_S stays silent (a flapping camera must not beep all day), the
red blinking still shows it.

Queue: at most QUEUE_SIZE cosmetic events (good read, repeat, refused) wait
for the worker; when it is full the oldest is dropped. State events (start,
ready, queued, faults, identify) are never dropped: a newer one replaces the
pending one with the same key, so they are bounded by the number of fault
names.
"""

from ordoscan.feedback.machine import (
    BEEP_S,
    CHANNELS,
    DIP_GAP_S,
    FAULT_BEEP_S,
    FAULT_BLINK_S,
    FAULT_GAP_S,
    FAULT_HZ,
    FAULT_REBEEP_S,
    FAULT_SOUND,
    GOOD_READ_DIP_S,
    GOOD_READ_HZ,
    GOOD_READ_SOUND,
    IDENTIFY_BLINK_S,
    IDENTIFY_MAX_S,
    IDENTIFY_S,
    LEDS,
    MAX_SOUND_DELAY_S,
    READY_GAP_S,
    READY_HZ,
    READY_NOTE_S,
    READY_SOUND,
    REFUSED_GAP_S,
    REFUSED_HZ,
    REFUSED_RED_S,
    REFUSED_SOUND,
    SOUND_GAP_S,
    Note,
    Outputs,
    Sound,
    StateMachine,
)
from ordoscan.feedback.pins import make_pin_factory
from ordoscan.feedback.service import QUEUE_SIZE, Feedback

__all__ = [
    "BEEP_S",
    "CHANNELS",
    "DIP_GAP_S",
    "FAULT_BEEP_S",
    "FAULT_BLINK_S",
    "FAULT_GAP_S",
    "FAULT_HZ",
    "FAULT_REBEEP_S",
    "FAULT_SOUND",
    "GOOD_READ_DIP_S",
    "GOOD_READ_HZ",
    "GOOD_READ_SOUND",
    "IDENTIFY_BLINK_S",
    "IDENTIFY_MAX_S",
    "IDENTIFY_S",
    "LEDS",
    "MAX_SOUND_DELAY_S",
    "QUEUE_SIZE",
    "READY_GAP_S",
    "READY_HZ",
    "READY_NOTE_S",
    "READY_SOUND",
    "REFUSED_GAP_S",
    "REFUSED_HZ",
    "REFUSED_RED_S",
    "REFUSED_SOUND",
    "SOUND_GAP_S",
    "Feedback",
    "Note",
    "Outputs",
    "Sound",
    "StateMachine",
    "make_pin_factory",
]
