"""What the picamera2 source does to libcamera's setup: tuning files, camera manager, leftovers.

The exposure cap goes into the sensor's tuning (libcamera has no control for an
auto-exposure limit), which libcamera reads when its camera manager starts; so
the manager is dropped before the capped tuning is handed over. The rest reads
or mends picamera2's own state where its API says nothing.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

from ordoscan.camera.base import teardown, why

log = logging.getLogger("ordoscan.camera")

# The tuning file libcamera's Raspberry Pi pipeline reads when its camera manager starts.
TUNING_ENV = "LIBCAMERA_RPI_TUNING_FILE"
# libcamera's draft ColorFilterArrangementEnum MONO: such sensors run <model>_mono.json
_CFA_MONO = 5


def cap_exposure_profiles(agc: dict[str, Any], max_exposure_us: int) -> int:
    """Clip every exposure profile of an rpi.agc tuning block to max_exposure_us; returns how many.

    The Raspberry Pi AGC walks a profile of (exposure, gain) stages: it lengthens
    the exposure first, then raises the gain. Clipping the exposures keeps the
    automatic exposure but makes the gain take over at the cap, which is what a
    moving hand needs. libcamera has no control for this; the tuning is the way.
    """
    channels = agc.get("channels")
    blocks = channels if isinstance(channels, list) else [agc]
    changed = 0
    for block in blocks:
        modes = block.get("exposure_modes") if isinstance(block, dict) else None
        if not isinstance(modes, dict):
            continue
        for mode in modes.values():
            if not isinstance(mode, dict):
                continue
            # "shutter" is the key libcamera's AGC reads (an "exposure" key would be ignored)
            stages = mode.get("shutter")
            if isinstance(stages, list) and all(isinstance(s, int | float) for s in stages):
                mode["shutter"] = [min(s, max_exposure_us) for s in stages]
                changed += 1
    return changed


_site_tuning_seen = ""


def site_tuning_file() -> str:
    """The tuning file the site named in TUNING_ENV (a NoIR module, say), or "".

    It is the base of the capped tuning. Remembered, because picamera2 then
    overwrites the variable with the name of a temporary file it deletes.
    """
    global _site_tuning_seen
    named = os.environ.get(TUNING_ENV, "")
    if named and os.path.isfile(named):
        _site_tuning_seen = named
    return _site_tuning_seen


def is_mono(picam_cls: Any, camera_id: str) -> bool:
    """Whether libcamera lists this camera as monochrome (its properties need no acquire)."""
    try:
        for camera in picam_cls._cm.cms.cameras:
            if camera.id == camera_id:
                props = {getattr(k, "name", str(k)): v for k, v in camera.properties.items()}
                return int(props.get("ColorFilterArrangement", -1)) == _CFA_MONO
    except Exception as e:  # private picamera2 state: a new version may differ
        log.debug("picamera2: camera properties unavailable: %s", why(e))
    return False


def forget_failed_instance(picam_cls: Any, registered: dict[Any, Any]) -> None:
    """Undo what a Picamera2() that failed (camera busy) left behind.

    picamera2 opens a notification pipe and registers the instance with its camera
    manager before it acquires the camera: a failure leaks the pipe, and the dead
    instance replaces whoever held that camera number.
    """
    manager: Any = getattr(picam_cls, "_cm", None)
    cameras = getattr(manager, "cameras", None)
    if not isinstance(cameras, dict):
        return
    for index, instance in list(cameras.items()):
        if instance is registered.get(index) or getattr(instance, "is_open", True):
            continue
        reader = getattr(instance, "notifymeread", None)
        if reader is not None:
            teardown("picamera2: close the failed instance's pipe", reader.close)
        writer = getattr(instance, "notifyme_w", None)
        if isinstance(writer, int):
            teardown("picamera2: close the failed instance's pipe", partial(os.close, writer))
        if index in registered:
            cameras[index] = registered[index]
        else:
            teardown("picamera2: unregister the failed instance", partial(manager.cleanup, index))


def forget_camera_manager(picam_cls: Any) -> None:
    """Let the next Picamera2 start libcamera afresh, so that it reads the given tuning.

    libcamera reads the tuning file when its camera manager starts. Listing the
    cameras (to learn the sensor model) started one, and picamera2 keeps it
    until its last camera closes; with no camera open, dropping it is safe.
    """
    manager = getattr(picam_cls, "_cm", None)
    if manager is not None and hasattr(manager, "_cms") and not getattr(manager, "cameras", None):
        # picamera2's own field (its `cms` starts libcamera's manager anew when it is None):
        # its API has no call that only drops it (reset() starts the next one at once,
        # before the capped tuning is named)
        manager._cms = None
