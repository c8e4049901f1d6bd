#!/usr/bin/env python3
"""Reference fixtures for the image and .npy layer of humanvit.h (section 10), made with Pillow,
numpy and (when installed) torchvision.

Writes small files into tests/fixtures/images/:
  png_*.png      PNGs of every colour type and bit depth, palette, Adam7 interlaced, stored /
                 fixed / dynamic deflate blocks, every filter type, several IDAT chunks. Written
                 by the small encoder below (Pillow writes neither interlaced nor 2/4-bit gray
                 PNGs); one more saved by Pillow itself.
  ppm_*.p?m      binary and ASCII PPM/PGM with comments, maxval 255, 65535 and 1000
  jpg_*.jpg      baseline JPEGs saved by Pillow (libjpeg-turbo): 4:4:4, 4:2:2, 4:2:0, gray,
                 restart markers, optimized Huffman tables, a tiny 3x3 4:2:0, and for the error
                 paths a progressive and a CMYK JPEG
  NAME.ref       the pixels Pillow decodes from NAME (raw uint8, rows of width*channels), in the
                 convention of hv_image_load: gray stays 1 channel, colour is 3, alpha dropped,
                 palette expanded, 16-bit PNG samples reduced to their high byte (as Pillow
                 does for RGB/RGBA/LA; for 16-bit gray, mode I;16, the high byte of Pillow's
                 values, since its convert('L') clips), PPM samples of maxval != 255 scaled by
                 255/maxval with rounding (as Pillow does)
  resize_*.ref   Pillow Image.resize of src_rgb.png / src_gray.png (raw uint8), sizes in the name
  eval_*.npy     torchvision Resize(size+32, BICUBIC) + CenterCrop(size) + ToTensor + Normalize
                 (ImageNet) of an image, float32 (3, size, size), written by numpy; eval_*.u8 the
                 same pipeline stopped before ToTensor (raw uint8, size*size*3)
  npy_*.npy      arrays written by numpy for hv_npy_load (good ones and ones it must refuse)

Without torchvision the eval references are computed with Pillow + numpy following
torchvision's code (shorter side -> size+32 with int() truncation of the long side, PIL bicubic
resize, crop offsets int(round((h - size) / 2.0)), /255, (x - mean) / std in float32).

usage: python3 tests/make_image_fixtures.py
"""
import io
import shutil
import subprocess
import tempfile
import warnings
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "images")
RNG = np.random.default_rng(1234)


def path(name):
    return os.path.join(OUT, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


# ---- synthetic pictures: smooth gradients, a disc, a little noise (compress to a few KB) ------
def picture(w, h, channels, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        fx, fy = 1.0 + c * 0.7, 0.8 + c * 0.45
        p = 128 + 90 * np.sin(x / w * 3.1 * fx + c) * np.cos(y / h * 2.3 * fy - c)
        disc = ((x - w * (0.3 + 0.2 * c)) ** 2 + (y - h * 0.55) ** 2) < (min(w, h) * 0.3) ** 2
        p = np.where(disc, 255 - p * 0.5, p)
        p += rng.normal(0, 6, size=p.shape)
        planes.append(p)
    a = np.stack(planes, axis=-1)
    return np.clip(np.round(a), 0, 255)


# ---- a small PNG encoder: every colour type, bit depth, filter, interlace and block type -------
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(typ, data):
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """samples: 1-D int array of one scanline's samples -> bytes"""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    n = (len(samples) + per - 1) // per
    out = bytearray(n)
    for i, v in enumerate(samples):
        out[i // per] |= int(v) << (8 - depth * (i % per + 1))
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(ftype, row, prev, bpp):
    out = bytearray(len(row))
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ftype]
        out[i] = (row[i] - pred) & 0xFF
    return bytes([ftype]) + bytes(out)


def encode_png(samples, depth, ctype, interlace=False, palette=None, trns=None, level=9,
               strategy=zlib.Z_DEFAULT_STRATEGY, idat_size=0, extra_chunks=()):
    """samples: (h, w, nsamples) int array at the PNG's own bit depth"""
    h, w, ns = samples.shape
    assert ns == SAMPLES[ctype]
    bpp = max(1, ns * depth // 8)
    raw = bytearray()
    ftype = 0
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for (x0, y0, dx, dy) in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        prev = bytes(len(pack_row(sub[0].reshape(-1), depth)))
        for r in range(sub.shape[0]):
            row = pack_row(sub[r].reshape(-1), depth)
            raw += filter_row(ftype, row, prev, bpp)
            ftype = (ftype + 1) % 5  # every filter type, in turn
            prev = row
    co = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    z = co.compress(bytes(raw)) + co.flush()
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0))
    for c in extra_chunks:
        png += c
    if palette is not None:
        png += chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        png += chunk(b"tRNS", trns)
    step = idat_size or len(z)
    for i in range(0, len(z), step):
        png += chunk(b"IDAT", z[i:i + step])
    png += chunk(b"IEND", b"")
    return png


def pillow_pixels(data):
    """Pillow's decode of an image file, in hv_image_load's convention"""
    im = Image.open(io.BytesIO(data))
    im.load()
    mode = im.mode
    if mode == "1":
        a = np.array(im.convert("L"))
    elif mode in ("I;16", "I;16B", "I"):
        a = np.array(im).astype(np.int64)
        a = (a >> 8).astype(np.uint8)  # 16-bit gray: high byte
    elif mode == "P":
        a = np.array(im.convert("RGB"))
    elif mode == "LA":
        a = np.array(im)[:, :, 0]
    elif mode == "RGBA":
        a = np.array(im)[:, :, :3]
    elif mode in ("L", "RGB"):
        a = np.array(im)
    else:
        raise ValueError("unexpected Pillow mode " + mode)
    if a.ndim == 2:
        a = a[:, :, None]
    return a.astype(np.uint8)


def expected_png(samples, depth, ctype, palette):
    """the same pixels computed from the encoder's samples (a cross-check of Pillow)"""
    s = samples.astype(np.int64)
    if depth == 16:
        s = s >> 8
    elif depth < 8 and ctype == 0:
        s = s * (255 // ((1 << depth) - 1))
    if ctype == 3:
        return np.asarray(palette, dtype=np.uint8)[s[:, :, 0]]
    if ctype == 4:
        return s[:, :, :1].astype(np.uint8)
    if ctype == 6:
        return s[:, :, :3].astype(np.uint8)
    return s.astype(np.uint8)


def save_with_ref(name, data, expect=None):
    write(name, data)
    ref = pillow_pixels(data)
    if expect is not None and expect.shape[2] == 1 and ref.shape[2] == 3:
        # Pillow opens 16-bit gray+alpha as RGBA with R = G = B
        assert np.array_equal(ref[:, :, :1], ref[:, :, 1:2]) and np.array_equal(ref[:, :, :1], ref[:, :, 2:3])
        ref = ref[:, :, :1]
    if expect is not None:
        assert ref.shape == expect.shape and np.array_equal(ref, expect), name + ": Pillow disagrees with the encoder"
    write(name.rsplit(".", 1)[0] + ".ref", ref.tobytes())
    return ref


def make_pngs():
    W, H = 23, 17
    base = picture(W, H, 4, seed=1)  # 0..255, four planes
    for ctype in (0, 2, 3, 4, 6):
        depths = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}[ctype]
        for depth in depths:
            for interlace in (False, True):
                ns = SAMPLES[ctype]
                maxv = (1 << depth) - 1
                palette = None
                if ctype == 3:
                    n = min(1 << depth, 200)
                    palette = RNG.integers(0, 256, size=(n, 3))
                    s = (base[:, :, :1] * n / 256).astype(np.int64)
                else:
                    s = np.round(base[:, :, :ns] / 255.0 * maxv).astype(np.int64)
                    if depth == 16:
                        s = np.clip(s + RNG.integers(-100, 100, size=s.shape), 0, maxv)
                name = "png_c%d_d%d%s.png" % (ctype, depth, "_i" if interlace else "")
                data = encode_png(s, depth, ctype, interlace, palette, idat_size=150)
                save_with_ref(name, data, expected_png(s, depth, ctype, palette))
    # palette with transparency, all three deflate block kinds, tiny interlaced images
    pal = RNG.integers(0, 256, size=(16, 3))
    s = (base[:, :, :1] / 16).astype(np.int64)
    save_with_ref("png_pal_trns.png", encode_png(s, 4, 3, palette=pal, trns=bytes(range(0, 160, 10))),
                  expected_png(s, 4, 3, pal))
    s = base[:, :, :3].astype(np.int64)
    save_with_ref("png_stored.png", encode_png(s, 8, 2, level=0), expected_png(s, 8, 2, None))
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([(xx * 7 + yy * 3) % 256, (xx * 2) % 256, np.full_like(xx, 77)], axis=-1)
    save_with_ref("png_fixed.png", encode_png(smooth, 8, 2, strategy=zlib.Z_FIXED), expected_png(smooth, 8, 2, None))
    text = chunk(b"tEXt", b"Comment\x00made by make_image_fixtures.py")
    save_with_ref("png_text.png", encode_png(s, 8, 2, extra_chunks=[text]), expected_png(s, 8, 2, None))
    for (w, h) in ((1, 1), (3, 2), (9, 9)):
        t = picture(w, h, 3, seed=w).astype(np.int64)
        save_with_ref("png_rgb_i_%dx%d.png" % (w, h), encode_png(t, 8, 2, interlace=True), expected_png(t, 8, 2, None))
    # one written by Pillow itself (its own encoder, optimize on)
    b = io.BytesIO()
    Image.fromarray(picture(31, 20, 3, seed=7).astype(np.uint8)).save(b, "PNG", optimize=True)
    save_with_ref("png_pillow.png", b.getvalue())


def make_ppms():
    pic = picture(13, 7, 3, seed=3).astype(np.int64)
    gray = pic[:, :, 0]
    h, w = gray.shape
    # binary, maxval 255, with comments in the header
    save_with_ref("ppm_p6.ppm", b"P6\n# a comment\n%d %d\n# another\n255\n" % (w, h) + pic.astype(np.uint8).tobytes())
    save_with_ref("ppm_p5.pgm", b"P5 %d %d 255\n" % (w, h) + gray.astype(np.uint8).tobytes())
    # ASCII
    body = "\n".join(" ".join(str(v) for v in row.reshape(-1)) for row in pic)
    save_with_ref("ppm_p3.ppm", ("P3\n# ascii\n%d %d\n255\n" % (w, h) + body + "\n").encode())
    body = "\n".join(" ".join(str(v) for v in row) for row in gray)
    save_with_ref("ppm_p2.pgm", ("P2 %d %d 255 # trailing comment\n" % (w, h) + body + "\n").encode())
    # maxval other than 255 scales to 8 bits with rounding, as Pillow does: 65535 and 1000
    p16 = np.clip(pic * 257 + RNG.integers(-128, 128, size=pic.shape), 0, 65535)
    save_with_ref("ppm_p6_16.ppm", b"P6\n%d %d\n65535\n" % (w, h) + p16.astype(">u2").tobytes(),
                  ((p16 * 510 + 65535) // 131070).astype(np.uint8))
    g1000 = (gray * 1000) // 255
    write("ppm_p5_1000.pgm", b"P5\n%d %d\n1000\n" % (w, h) + g1000.astype(">u2").tobytes())
    write("ppm_p5_1000.ref", ((g1000 * 255 * 2 + 1000) // 2000).astype(np.uint8).tobytes())


def make_jpegs():
    pic = picture(45, 31, 3, seed=5).astype(np.uint8)
    rgb = Image.fromarray(pic)

    def jpeg(im, **kw):
        b = io.BytesIO()
        im.save(b, "JPEG", quality=kw.pop("quality", 90), **kw)
        return b.getvalue()

    save_with_ref("jpg_444.jpg", jpeg(rgb, subsampling=0))
    save_with_ref("jpg_422.jpg", jpeg(rgb, subsampling=1))
    save_with_ref("jpg_420.jpg", jpeg(rgb, subsampling=2))
    save_with_ref("jpg_gray.jpg", jpeg(rgb.convert("L")))
    save_with_ref("jpg_420_rst.jpg", jpeg(rgb, subsampling=2, restart_marker_blocks=2))
    save_with_ref("jpg_420_opt.jpg", jpeg(rgb, subsampling=2, optimize=True, quality=75))
    save_with_ref("jpg_420_q100.jpg", jpeg(Image.fromarray(picture(16, 16, 3, seed=9).astype(np.uint8)), subsampling=2, quality=100))
    save_with_ref("jpg_420_3x3.jpg", jpeg(Image.fromarray(picture(3, 3, 3, seed=8).astype(np.uint8)), subsampling=2))
    save_with_ref("jpg_422_odd.jpg", jpeg(Image.fromarray(picture(17, 9, 3, seed=10).astype(np.uint8)), subsampling=1))
    write("jpg_progressive.jpg", jpeg(rgb, progressive=True))
    # sequential JPEGs with one scan per component (3 scans) and with Y+Cb then Cr (2 scans):
    # Pillow cannot write these, jpegtran (libjpeg-turbo-progs) can
    if shutil.which("jpegtran"):
        for name, src, script in (("jpg_420_scans.jpg", "jpg_420.jpg", "0;\n1;\n2;\n"), ("jpg_422_scans.jpg", "jpg_422.jpg", "0,1;\n2;\n")):
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
                f.write(script)
            data = subprocess.run(["jpegtran", "-scans", f.name, path(src)], check=True, capture_output=True).stdout
            os.remove(f.name)
            assert data.count(b"\xff\xda") == script.count(";")
            save_with_ref(name, data)
    else:
        print("  note: jpegtran not found (apt-get install libjpeg-turbo-progs): keeping the committed jpg_*_scans files")
    write("jpg_cmyk.jpg", jpeg(rgb.convert("CMYK")))


def make_resize_refs():
    src = picture(64, 48, 3, seed=11).astype(np.uint8)
    gsrc = picture(40, 57, 1, seed=12).astype(np.uint8)[:, :, 0]
    b = io.BytesIO()
    Image.fromarray(src).save(b, "PNG")
    save_with_ref("src_rgb.png", b.getvalue())
    b = io.BytesIO()
    Image.fromarray(gsrc).save(b, "PNG")
    save_with_ref("src_gray.png", b.getvalue())
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
               "box": Image.BOX, "hamming": Image.HAMMING}
    cases = [("rgb", src, 31, 23, "bicubic"), ("rgb", src, 100, 37, "bicubic"), ("rgb", src, 64, 20, "bilinear"),
             ("rgb", src, 17, 70, "bilinear"), ("rgb", src, 9, 5, "bicubic"), ("rgb", src, 96, 72, "bicubic"),
             ("rgb", src, 50, 48, "lanczos"), ("rgb", src, 21, 33, "box"), ("rgb", src, 70, 30, "hamming"),
             ("gray", gsrc, 25, 80, "bicubic"), ("gray", gsrc, 13, 19, "bilinear")]
    for kind, a, w, h, filt in cases:
        out = np.array(Image.fromarray(a).resize((w, h), filters[filt]))
        write("resize_%s_%dx%d_%s.ref" % (kind, w, h, filt), out.tobytes())


MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def eval_transform(im, size):
    """(3, size, size) float32 and the uint8 crop before ToTensor"""
    im = im.convert("RGB")
    try:
        import torchvision.transforms as T
        import torchvision.transforms.functional as TF
        resized = T.Resize(size + 32, interpolation=T.InterpolationMode.BICUBIC)(im)
        crop = T.CenterCrop(size)(resized)
        t = T.Normalize(MEAN, STD)(T.ToTensor()(crop)).numpy()
        via = "torchvision"
        del TF
    except ImportError:  # torchvision's behaviour, spelled out
        w, h = im.size
        short, long_ = (w, h) if w <= h else (h, w)
        ns, nl = size + 32, int((size + 32) * long_ / short)
        nw, nh = (ns, nl) if w <= h else (nl, ns)
        resized = im if (nw, nh) == (w, h) else im.resize((nw, nh), Image.BICUBIC)
        top = int(round((nh - size) / 2.0))
        left = int(round((nw - size) / 2.0))
        crop = resized.crop((left, top, left + size, top + size))
        x = np.array(crop).astype(np.float32).transpose(2, 0, 1) / np.float32(255)
        t = (x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
        via = "Pillow + numpy"
    return t.astype(np.float32), np.array(crop), via


def make_eval_refs():
    # landscape RGB, downscaled; portrait gray, upscaled; odd crop margins (round-half-even offsets)
    cases = [("eval_land", picture(121, 75, 3, seed=21).astype(np.uint8), 35),
             ("eval_port", picture(45, 70, 1, seed=22).astype(np.uint8)[:, :, 0], 42)]
    for name, a, size in cases:
        b = io.BytesIO()
        Image.fromarray(a).save(b, "PNG", optimize=True)
        save_with_ref(name + ".png", b.getvalue())
        t, crop, via = eval_transform(Image.open(io.BytesIO(b.getvalue())), size)
        np.save(path(name + "_%d.npy" % size), t)
        write(name + "_%d.u8" % size, crop.astype(np.uint8).tobytes())
        print("  %s: %s, size %d, reference by %s" % (name, a.shape, size, via))
    # the whole pipeline from a JPEG (decoder + transform)
    t, crop, _ = eval_transform(Image.open(path("jpg_420.jpg")), 24)
    np.save(path("eval_jpg_420_24.npy"), t)


def make_npys():
    np.save(path("npy_f4.npy"), (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.25) / 3)
    np.save(path("npy_f8.npy"), np.linspace(-1.5, 2.5, 7, dtype=np.float64))
    np.save(path("npy_i4.npy"), np.array([[1, -2], [3, 2147483647], [-2147483648, 0]], dtype=np.int32))
    np.save(path("npy_i8.npy"), np.array([5, -6, 2147483647, -2147483648], dtype=np.int64))
    np.save(path("npy_i8_big.npy"), np.array([1, 2147483648], dtype=np.int64))
    np.save(path("npy_scalar.npy"), np.float32(3.5))
    np.save(path("npy_empty.npy"), np.zeros((0, 3), dtype=np.float32))
    np.save(path("npy_6d.npy"), np.arange(64, dtype=np.float32).reshape(2, 2, 2, 2, 2, 2))
    np.save(path("npy_fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    np.save(path("npy_be.npy"), np.arange(4, dtype=">f4"))
    np.save(path("npy_u8.npy"), np.arange(4, dtype=np.uint8))
    with open(path("npy_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, np.arange(5, dtype=np.float32) * 2, version=(2, 0))
    # what hv_npy_save must write, byte for byte
    np.save(path("npy_save_f4.npy"), (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) * 0.25)
    np.save(path("npy_save_i4.npy"), np.arange(-3, 4, dtype=np.int32))
    np.save(path("npy_save_wide.npy"), np.zeros((1234567, 0), dtype=np.float32))


def main():
    warnings.simplefilter("ignore")  # Pillow: "Palette images with Transparency expressed in bytes..."
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if "_scans." in f and not shutil.which("jpegtran"):
            continue
        os.remove(path(f))
    make_pngs()
    make_ppms()
    make_jpegs()
    make_resize_refs()
    make_eval_refs()
    make_npys()
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, into %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    main()
