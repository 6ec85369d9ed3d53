"""Aids for the desk demo, the tests and the benchmarks: never imported by the kiosk's stages.

As gpiozero ships `pins/mock.py` on purpose, ordoscan ships these so that an
integrator can replay scenes and trace mock pins without a Pi; the daemon's
stages (camera, decoder, classifier, dedupe, outbox, feedback, publisher)
import nothing from here (a test checks it).
"""
