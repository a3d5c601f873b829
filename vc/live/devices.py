"""Audio devices through sounddevice (PortAudio): import with a fix when the library is missing, the
device list, choosing a device with -i/-o, and what a stream may be opened with."""

from __future__ import annotations

from vc.live.quiet import quiet_alsa_messages
from vc.live.settings import LiveError

NO_DEVICE_HINT = ("On a machine without a sound card, start a sound server (for example PulseAudio with a "
                  "null sink) or convert a file with --input-file IN.wav -o none --record OUT.wav.")


def import_sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when the PortAudio library cannot be loaded
        raise LiveError(
            f"The PortAudio library was not found ({exc}). Install it: apt-get install libportaudio2 "
            "(Debian/Ubuntu), dnf install portaudio (Fedora), brew install portaudio (macOS).") from None
    except ImportError:
        raise LiveError("The Python package sounddevice is not installed: pip install sounddevice") from None
    quiet_alsa_messages()
    return sd


def _query_devices(sd) -> list[dict]:
    try:
        return [dict(d, index=i) for i, d in enumerate(sd.query_devices())]
    except Exception as exc:  # noqa: BLE001 - PortAudio initialisation errors come in several types
        raise LiveError(f"PortAudio cannot list audio devices: {exc}") from None


def _defaults(sd) -> tuple[int, int]:
    try:
        default_in, default_out = sd.default.device
        return int(default_in if default_in is not None else -1), int(default_out if default_out is not None else -1)
    except Exception:  # noqa: BLE001 - no default device configured
        return -1, -1


def format_device_list(sd) -> str:
    devices = _query_devices(sd)
    if not devices:
        return "No audio devices found. " + NO_DEVICE_HINT
    default_in, default_out = _defaults(sd)
    try:
        apis = [a["name"] for a in sd.query_hostapis()]
    except Exception:  # noqa: BLE001
        apis = []
    lines = ["  idx  in out  rate    host API     name"]
    for d in devices:
        # python-sounddevice's own table marks the default input ">" and the default output "<"
        mark = (">" if d["index"] == default_in else " ") + ("<" if d["index"] == default_out else " ")
        api = apis[d["hostapi"]] if 0 <= d.get("hostapi", -1) < len(apis) else "?"
        lines.append(f"{mark}{d['index']:3d}  {d['max_input_channels']:2d} {d['max_output_channels']:3d}  "
                     f"{d['default_samplerate']:6.0f}  {api:<11.11s}  {d['name']}")
    lines.append("(> default input, < default output, as sounddevice marks them; select with -i/-o by index "
                 "or part of the name)")
    return "\n".join(lines)


def resolve_device(sd, spec, kind: str) -> int:
    """-i/-o value (None = default, an index, or a case-insensitive part of the name) -> device index.

    The matching is sounddevice's own (`query_devices(device, kind)`: an index, or space-separated parts of
    "name, host API" in order, an exact name winning over partial matches); this turns its errors into
    sentences that list the devices to choose from."""
    channels_key = f"max_{kind}_channels"
    devices = _query_devices(sd)
    usable = [d for d in devices if d[channels_key] > 0]
    if not usable:
        raise LiveError(f"No audio {kind} device found. " + NO_DEVICE_HINT)
    names = "; ".join(f"{d['index']}: {d['name']}" for d in usable)
    text = None if spec is None else str(spec).strip()
    if not text:
        index = _defaults(sd)[0 if kind == "input" else 1]
        valid = 0 <= index < len(devices) and devices[index][channels_key] > 0
        return index if valid else int(usable[0]["index"])  # no usable default: the first that can
    query = int(text) if text.lstrip("-").isdigit() else text
    if isinstance(query, int) and not 0 <= query < len(devices):
        raise LiveError(f"There is no audio device {query}. {kind.capitalize()} devices: {names}")
    try:
        return int(sd.query_devices(query, kind)["index"])
    except ValueError as exc:
        message = str(exc)
    if message.startswith("Not an"):
        raise LiveError(f"Device {query} ({devices[query]['name'] if isinstance(query, int) else query}) has no "
                        f"{kind} channels; choose one of: {names}")
    if message.startswith("Multiple"):
        listed = "; ".join(line.strip() for line in message.splitlines()[1:])
        raise LiveError(f"{text!r} matches several {kind} devices ({listed}); give {'-i' if kind == 'input' else '-o'}"
                        " a longer name or an index.")
    raise LiveError(f"No {kind} device matches {text!r}. {kind.capitalize()} devices: {names} "
                    "(see vc-live --list-devices).")


def device_rate(sd, index: int, samplerate: int | None) -> int:
    """The rate to open a device at: the one asked for, else the device's default."""
    if samplerate:
        return int(samplerate)
    return int(round(sd.query_devices(index)["default_samplerate"]))


def stream_channels(sd, index: int, kind: str, rate: int) -> int:
    """Channels to open (1 when the device allows) once PortAudio accepts the settings."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    info = sd.query_devices(index)
    max_ch = info[f"max_{kind}_channels"]
    first_error = None
    for channels in sorted({1, min(2, max_ch), max_ch}):
        try:
            check(device=index, channels=channels, dtype="float32", samplerate=rate)
            return channels
        except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError, same meaning
            first_error = first_error or exc
            if "sample rate" in str(exc).lower():
                break
    text = str(first_error)
    if "sample rate" in text.lower():
        raise LiveError(
            f"The {kind} device {info['name']!r} does not support {rate} Hz. Try --samplerate "
            f"{int(info['default_samplerate'])} (its default), 48000 or 44100.")
    raise LiveError(f"The {kind} device {info['name']!r} cannot be opened with these settings: {text}")


def stream_error(exc: Exception, what: str) -> LiveError:
    """PortAudio's reason a stream would not open -> a sentence with a fix."""
    text = str(exc)
    low = text.lower()
    if "unavailable" in low or "busy" in low or "-9985" in low:
        return LiveError(f"The {what} device is busy (another program is using it). Close that program or "
                         "choose another device with -i/-o (vc-live --list-devices).")
    if "sample rate" in low:
        return LiveError(f"The {what} device rejected the sample rate: {text}. Try --samplerate 48000 or 44100.")
    return LiveError(f"Cannot open the {what} device: {text}")
