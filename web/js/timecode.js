// Reads the capture-time stamp the synthetic camera draws into its pictures (layout: the
// docstring of device/hal/timecode.py), from a canvas copy of the <video>.  Only the
// glass-to-glass benchmark and the tests use it; the app never imports it.
//
// Layout: one row of 38 blocks of 16x16 pixels at the top-left of the picture; block 0 white,
// block 1 black (sync), blocks 2..33 the 32-bit value (ms since the epoch mod 2^32, MSB
// first), blocks 34..37 a 4-bit check (XOR of the value's eight nibbles).  A block is 1 when
// the mean of (R+G+B)/3 over its central 8x8 pixels is above 127.

export const BLOCK = 16;
export const BLOCKS = 38;
export const WIDTH = BLOCK * BLOCKS;
const MODULUS = 2 ** 32;

function check(value) {
  let x = 0;
  for (let shift = 0; shift < 32; shift += 4) x ^= (value >>> shift) & 0xf;
  return x;
}

/** The stamp from the block levels (38 means), or null when there is none. */
export function decodeLevels(levels) {
  const bits = levels.map((level) => (level > 127 ? 1 : 0));
  if (bits[0] !== 1 || bits[1] !== 0) return null;
  let value = 0;
  for (let i = 2; i < 34; i++) value = value * 2 + bits[i];
  let got = 0;
  for (let i = 34; i < 38; i++) got = got * 2 + bits[i];
  return got === check(value) ? value : null;
}

/** The stamp of the picture the video shows now (null: no stamp, or no picture yet). */
export function readTimecode(video, canvas = null) {
  if (video.videoWidth < WIDTH || video.videoHeight < BLOCK) return null;
  const surface = canvas || new OffscreenCanvas(WIDTH, BLOCK);
  const ctx = surface.getContext("2d", { willReadFrequently: true });
  // Source rectangle in the video's own pixels: no scaling of the stamp.
  ctx.drawImage(video, 0, 0, WIDTH, BLOCK, 0, 0, WIDTH, BLOCK);
  const { data } = ctx.getImageData(0, 0, WIDTH, BLOCK);
  const levels = [];
  for (let k = 0; k < BLOCKS; k++) {
    let sum = 0;
    for (let y = 4; y < 12; y++) {
      for (let x = k * BLOCK + 4; x < k * BLOCK + 12; x++) {
        const i = (y * WIDTH + x) * 4;
        sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
      }
    }
    levels.push(sum / 64);
  }
  return decodeLevels(levels);
}

/** Milliseconds from the stamp `value` to `nowMs` (wall clock), modulo 2^32. */
export function latencyMs(value, nowMs = Date.now()) {
  return (((Math.floor(nowMs) % MODULUS) - value) % MODULUS + MODULUS) % MODULUS;
}
