#!/usr/bin/env python3
"""Classifies images with an .apot model through apot's C API, from Python with ctypes.

    python3 classify.py MODEL.apot IMAGE.jpg [IMAGE.jpg ...]

prints "IMAGE<TAB>CLASS<TAB>PROBABILITY" for each image. Needs numpy and Pillow (Debian:
python3-numpy, python3-pil) and libapot_runtime.so: found on the library path, or given by
APOT_RUNTIME_LIBRARY=/path/to/libapot_runtime.so. Each image must have the model's input size.
Nothing else in apot needs Python.
"""
import ctypes
import ctypes.util
import os
import sys

import numpy as np
from PIL import Image


class ApotError(RuntimeError):
    pass


def load_library():
    path = os.environ.get("APOT_RUNTIME_LIBRARY") or ctypes.util.find_library("apot_runtime")
    if not path:
        raise ApotError("libapot_runtime.so not found: set APOT_RUNTIME_LIBRARY")
    lib = ctypes.CDLL(path)
    c_int_p, c_float_p = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_float)
    model_p = ctypes.c_void_p
    lib.apot_last_error.restype = ctypes.c_char_p
    lib.apot_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(model_p)]
    lib.apot_model_free.argtypes = [model_p]
    lib.apot_model_free.restype = None
    lib.apot_model_input_shape.argtypes = [model_p, c_int_p, c_int_p, c_int_p]
    lib.apot_model_num_classes.argtypes = [model_p, c_int_p]
    lib.apot_model_class_name.argtypes = [model_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.apot_model_run_u8.argtypes = [model_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t, ctypes.c_int,
                                      ctypes.c_int, c_float_p, ctypes.c_size_t, ctypes.c_void_p]
    return lib


class Model:
    """An .apot model; run() takes a batch of 8-bit images (N x H x W x C numpy array)."""

    def __init__(self, lib, path):
        self.lib = lib
        self.handle = ctypes.c_void_p()
        self._check(lib.apot_model_load(path.encode(), ctypes.byref(self.handle)))
        c, h, w, n = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._check(lib.apot_model_input_shape(self.handle, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w)))
        self._check(lib.apot_model_num_classes(self.handle, ctypes.byref(n)))
        self.channels, self.height, self.width, self.num_classes = c.value, h.value, w.value, n.value
        self.class_names = []
        for k in range(self.num_classes):
            name = ctypes.c_char_p()
            self._check(lib.apot_model_class_name(self.handle, k, ctypes.byref(name)))
            self.class_names.append(name.value.decode())

    def _check(self, status):
        if status != 0:
            raise ApotError(self.lib.apot_last_error().decode())

    def run(self, images):
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4:
            raise ValueError("images must be N x H x W x C")
        logits = np.empty((images.shape[0], self.num_classes), dtype=np.float32)
        self._check(self.lib.apot_model_run_u8(
            self.handle, images.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), images.size, images.shape[0],
            0,  # APOT_LAYOUT_HWC
            logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), logits.size, None))
        return logits

    def close(self):
        if self.handle:
            self.lib.apot_model_free(self.handle)
            self.handle = ctypes.c_void_p()


def main(argv):
    if len(argv) < 3:
        print(f"usage: {argv[0]} MODEL.apot IMAGE.jpg [IMAGE.jpg ...]", file=sys.stderr)
        return 2
    try:
        model = Model(load_library(), argv[1])
        mode = "L" if model.channels == 1 else "RGB"
        paths = argv[2:]
        for first in range(0, len(paths), 64):
            batch = paths[first:first + 64]
            images = np.stack([np.asarray(Image.open(p).convert(mode)).reshape(
                model.height, model.width, model.channels) for p in batch])
            logits = model.run(images)
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            for path, p in zip(batch, probabilities):
                best = int(p.argmax())
                print(f"{path}\t{model.class_names[best]}\t{p[best]:.4f}")
        model.close()
    except (ApotError, OSError, ValueError) as e:
        print(f"classify: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
