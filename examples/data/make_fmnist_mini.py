#!/usr/bin/env python3
"""make_fmnist_mini.py - the small Fashion-MNIST subset committed in examples/data/fmnist-mini/.

The demo (./build.sh demo) uses the full Fashion-MNIST from Debian's dataset-fashion-mnist
package when it is installed, and this subset otherwise (and always in --quick mode), so that it
runs offline. Fashion-MNIST is (c) Zalando SE, MIT licence (see README.md in this folder).

    apt-get install dataset-fashion-mnist
    python3 examples/data/make_fmnist_mini.py [SRC_DIR] [--train 200] [--test 50]

Picks, per class, the first N images of a seeded shuffle (class-balanced), keeps them in shuffled
order, and writes IDX files gzipped with a fixed mtime, so the output is the same bytes each run.
"""
import argparse, gzip, os, random, struct

def read_idx(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]

def write_idx(path, dims, payload):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack('>' + 'I' * len(dims), *dims)
    with open(path, 'wb') as raw:
        with gzip.GzipFile(filename='', mode='wb', fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(header + payload)

def subset(src, prefix, per_class, seed, out, out_prefix):
    (n, h, w), pixels = read_idx(os.path.join(src, prefix + '-images-idx3-ubyte.gz'))
    (_,), labels = read_idx(os.path.join(src, prefix + '-labels-idx1-ubyte.gz'))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    taken, count = [], [0] * 10
    for i in order:
        if count[labels[i]] < per_class:
            count[labels[i]] += 1
            taken.append(i)
    img = b''.join(pixels[i * h * w:(i + 1) * h * w] for i in taken)
    lab = bytes(labels[i] for i in taken)
    write_idx(os.path.join(out, out_prefix + '-images-idx3-ubyte.gz'), (len(taken), h, w), img)
    write_idx(os.path.join(out, out_prefix + '-labels-idx1-ubyte.gz'), (len(taken),), lab)
    print(f'{out_prefix}: {len(taken)} images')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('src', nargs='?', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--train', type=int, default=200, help='train images per class')
    ap.add_argument('--test', type=int, default=50, help='test images per class')
    a = ap.parse_args()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fmnist-mini')
    os.makedirs(out, exist_ok=True)
    subset(a.src, 'train', a.train, 1, out, 'train')
    subset(a.src, 't10k', a.test, 2, out, 't10k')

if __name__ == '__main__':
    main()
