"""The HAL's pieces on their own: H.264 rewriting, the timecode, the registry, Pi models."""

from __future__ import annotations

import sys
from fractions import Fraction

import av
import pytest

from device.hal import BACKENDS, CameraConfig, CameraError, open_camera, probe_report, timecode
from device.hal.h264 import (
    NAL_PPS,
    NAL_SPS,
    StreamNormalizer,
    constrain_baseline,
    join_nals,
    nal_type,
    split_nals,
)
from device.hal.picam import has_hardware_h264, pi_model
from device.hal.synthetic import PatternGenerator
from tests.fakes import fake_picamera2  # noqa: F401  (a fixture)

PI4 = "Raspberry Pi 4 Model B Rev 1.4"


def test_split_and_join_nals_round_trip_with_3_and_4_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x42\xc0\x1e\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x00"
    assert split_nals(data) == [b"\x67\x42\xc0\x1e", b"\x68\xce", b"\x65\x88"]
    assert split_nals(join_nals(split_nals(data))) == split_nals(data)


def test_baseline_sps_is_marked_constrained_and_others_are_left_alone() -> None:
    assert constrain_baseline(b"\x67\x42\xc0\x1f\xaa")[1:4].hex() == "42e01f"
    assert constrain_baseline(b"\x67\x42\x00\x1f\xaa")[1:4].hex() == "42e01f"
    assert constrain_baseline(b"\x67\x64\x00\x1f\xaa") == b"\x67\x64\x00\x1f\xaa"


def test_normalizer_puts_remembered_parameter_sets_before_later_idrs() -> None:
    sps, pps = b"\x67\x42\xc0\x1f\xaa", b"\x68\xce\x3c\x80"
    normalizer = StreamNormalizer()
    first, key = normalizer.normalize(join_nals([sps, pps, b"\x65\x88\x84"]))
    assert key and [nal_type(n) for n in split_nals(first)] == [NAL_SPS, NAL_PPS, 5]
    p_frame, key = normalizer.normalize(join_nals([b"\x41\x9a"]))
    assert not key and split_nals(p_frame) == [b"\x41\x9a"]
    later, key = normalizer.normalize(join_nals([b"\x65\x88\x85"]))
    assert key and [nal_type(n) for n in split_nals(later)] == [NAL_SPS, NAL_PPS, 5]
    assert normalizer.profile_level_id == "42e01f"


def test_timecode_bits_round_trip_through_pixels() -> None:
    width, height = 640, 32
    for value in (0, 1, 2**32 - 1, 0xDEADBEEF, timecode.timecode_ms(1_700_000_000.123)):
        row = b"".join(bytes([v, v, v]) for v in timecode.luma_row(value)) + bytes(
            3 * (width - timecode.WIDTH)
        )
        image = row * height
        assert timecode.read_timecode_rgb24(image, width, height) == value


def test_timecode_absent_or_damaged_reads_as_none() -> None:
    width, height = 640, 32
    assert timecode.read_timecode_rgb24(bytes(3 * width * height), width, height) is None
    row = bytearray(b"".join(bytes([v, v, v]) for v in timecode.luma_row(12345)))
    row[3 * 16 * 20 : 3 * 16 * 21] = bytes(3 * 16) if row[3 * 16 * 20] else b"\xeb" * 48
    image = (bytes(row) + bytes(3 * (width - timecode.WIDTH))) * height
    assert timecode.read_timecode_rgb24(image, width, height) is None
    assert timecode.read_timecode_rgb24(b"", 320, 240) is None  # too small to hold one


def test_timecode_survives_h264_at_a_low_bit_rate() -> None:
    pattern = PatternGenerator(640, 360)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt, enc.bit_rate = 640, 360, "yuv420p", 150_000
    enc.time_base, enc.framerate = Fraction(1, 30), Fraction(30)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    read = []
    for n in range(20):
        frame = pattern.frame(n, 1_700_000_000 + n / 30)
        frame.pts = n
        for packet in enc.encode(frame):
            for out in dec.decode(packet):
                rgb = out.reformat(format="rgb24")
                p = rgb.planes[0]
                read.append(timecode.read_timecode_rgb24(bytes(p), 640, 360, p.line_size))
    assert read == [timecode.timecode_ms(1_700_000_000 + n / 30) for n in range(len(read))]


def test_timecode_reads_numpy_like_arrays() -> None:
    class Array:
        def __init__(self, data: bytes, h: int, w: int) -> None:
            self.shape = (h, w, 3)
            self._data = data

        def tobytes(self) -> bytes:
            return self._data

    row = b"".join(bytes([v, v, v]) for v in timecode.luma_row(777)) + bytes(3 * 32)
    assert timecode.read_timecode(Array(row * 16, 16, timecode.WIDTH + 32)) == 777


def test_registry_and_probe_report() -> None:
    assert set(BACKENDS) == {"picamera2", "v4l2", "synthetic"}
    report = probe_report()
    for name in BACKENDS:
        assert name in report
    assert "Would use: " in report
    assert "libx264" in report
    with pytest.raises(CameraError, match="unknown camera backend"):
        open_camera("nope", CameraConfig())


def test_nothing_heavy_is_imported_with_the_hal() -> None:
    import subprocess

    code = (
        "import device.hal, sys; "
        "print(sorted(m for m in ('av', 'picamera2', 'aiortc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("model", "hardware"),
    [
        ("Raspberry Pi Zero 2 W Rev 1.0", True),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", True),
        ("Raspberry Pi 4 Model B Rev 1.4", True),
        ("Raspberry Pi 5 Model B Rev 1.0", False),
        ("Raspberry Pi Compute Module 5 Rev 1.0", False),
        (None, False),
    ],
)
def test_pi_models_with_and_without_an_h264_encoder(model: str | None, hardware: bool) -> None:
    assert has_hardware_h264(model) is hardware


def test_pi_model_is_read_from_the_device_tree(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "model"
    path.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert pi_model(path) == "Raspberry Pi 5 Model B Rev 1.0"
    assert pi_model(Path(str(tmp_path)) / "missing") is None


@pytest.mark.usefixtures("fake_picamera2")
def test_pi5_software_encoding_is_held_to_720p30() -> None:
    from device.hal.picam import PicameraCamera

    camera = PicameraCamera(
        CameraConfig(width=1920, height=1080, fps=60), 0, model="Raspberry Pi 5 Model B Rev 1.0"
    )
    caps = camera.capabilities
    assert (caps.width, caps.height, caps.fps, caps.hardware_encoder) == (1280, 720, 30.0, False)
    pi4 = PicameraCamera(
        CameraConfig(width=1920, height=1080), 0, model="Raspberry Pi 4 Model B Rev 1.4"
    )
    assert (pi4.capabilities.width, pi4.capabilities.hardware_encoder) == (1920, True)


@pytest.mark.usefixtures("fake_picamera2")
def test_picamera2_backend_asks_for_repeated_headers_and_baseline() -> None:
    import picamera2  # the fake

    from device.hal.picam import PicameraCamera

    camera = PicameraCamera(
        CameraConfig(width=640, height=360, keyframe_interval_s=1),
        0,
        model="Raspberry Pi 4 Model B Rev 1.4",
    )
    camera.start(lambda unit: None)
    try:
        encoder = picamera2.INSTANCES[-1].encoder
        assert (encoder.repeat, encoder.iperiod, encoder.profile) == (True, 30, "baseline")
        camera.request_keyframe()
        assert encoder.forced_keyframes == 1
    finally:
        camera.close()
    assert picamera2.INSTANCES[-1].closed


@pytest.mark.usefixtures("fake_picamera2")
def test_probe_lists_a_fake_csi_camera() -> None:
    report = probe_report()
    assert "imx708" in report
    assert "Would use: picamera2" in report
