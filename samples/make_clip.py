#!/usr/bin/env python3
"""Make mien's bundled sample clip (samples/clip/*.jpg, 640x480) from public-domain stills.

Sources, all redistributable:
- astronaut.png: NASA portrait of Eileen Collins, public domain; shipped in scikit-image (BSD-3).
- grace_hopper_512x512.jpg: US Navy portrait of Grace Hopper, public domain; shipped in Debian's facedetect package.
- coffee.png: scikit-image (CC0); a frame with no face.

The clip pans, zooms and relights the faces (dim, bright, warm, backlit), puts two faces in one frame at a
small size, and ends on faceless frames, so a run exercises detection at several scales and light levels.

usage: make_clip.py GRACE_HOPPER_JPG OUT_DIR
"""
import os
import sys

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance

W, H = 640, 480


def canvas(color=(40, 44, 52)):
    return Image.new("RGB", (W, H), color)


def place(bg, img, scale, cx, cy):
    im = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    bg.paste(im, (round(cx - im.width / 2), round(cy - im.height / 2)))
    return bg


def relight(im, brightness=1.0, warm=0.0, gamma=1.0):
    a = np.asarray(im, np.float32) / 255.0
    a = np.clip(a ** gamma * brightness, 0, 1)
    a[..., 0] = np.clip(a[..., 0] * (1 + warm), 0, 1)
    a[..., 2] = np.clip(a[..., 2] * (1 - warm), 0, 1)
    return Image.fromarray((a * 255 + 0.5).astype(np.uint8))


def frames(astronaut, hopper, coffee):
    # 0-7: astronaut, panning left to right, slowly zooming in.
    for i in range(8):
        yield place(canvas(), astronaut, 0.85 + 0.03 * i, 250 + 20 * i, 250)
    # 8-13: Grace Hopper, zoom out then in, with changing light.
    lights = [(1.0, 0, 1), (0.55, 0, 1.2), (1.25, 0, 0.8), (1.0, 0.25, 1), (0.8, -0.15, 1), (1.1, 0, 1)]
    for i, (b, w, g) in enumerate(lights):
        f = place(canvas((90, 90, 90)), hopper, 0.9 - 0.08 * min(i, 5 - i), 320, 240)
        yield relight(f, b, w, g)
    # 14-17: both faces in one frame, small (line-camera distance), drifting.
    for i in range(4):
        f = canvas((120, 110, 100))
        place(f, astronaut, 0.42, 170 + 6 * i, 230)
        place(f, hopper, 0.40, 470 - 6 * i, 250)
        yield relight(f, 0.9 + 0.05 * i)
    # 18-19: backlit astronaut (bright background, dark face).
    for i in range(2):
        f = place(canvas((235, 235, 230)), relight(astronaut, 0.6), 0.7, 300 + 30 * i, 240)
        yield f
    # 20-23: no face.
    for i in range(4):
        yield place(canvas(), coffee, 1.0 + 0.05 * i, 320 - 10 * i, 240)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    astronaut = Image.fromarray(skimage.data.astronaut())
    coffee = Image.fromarray(skimage.data.coffee())
    hopper = Image.open(sys.argv[1]).convert("RGB")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(frames(astronaut, hopper, coffee)):
        f.save(f"{out}/frame_{i:04d}.jpg", quality=88)
    print(f"wrote {i + 1} frames to {out}")


if __name__ == "__main__":
    main()
