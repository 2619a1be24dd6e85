"""A kiln CNN spec's model (by default kiln's MNIST CNN, examples/mnist-cnn.toml)
built in Keras or PyTorch, for the side-by-side CNN benchmark (issue 6; bench/compare_cnn.sh). Same data handling as ../shared/peers and peer_mlp.py:
MNIST from the local IDX files, pixels scaled to [0, 1], the last fraction of the training
set held out for validation before any shuffling (as Keras's validation_split does), the
rest shuffled every epoch. Prints one JSON line (last line of stdout).

    The default spec: Conv2D 32 3x3 relu (valid) -> MaxPool 2x2 -> Conv2D 64 3x3 relu -> MaxPool 2x2 -> Flatten
    -> Dropout 0.25 -> Dense 128 relu -> Dropout 0.5 -> Dense 10 softmax; Adam 1e-3; sparse categorical
    cross-entropy (PyTorch: CrossEntropyLoss on the logits, the same loss fused).
    --spec examples/mnist-cnn-classic.toml builds the classic Keras MNIST CNN instead.

    python peer_cnn.py --framework keras|pytorch [--epochs 12] [--batch 128] [--seed 0]
                       [--validation-split 0.1] [--subset N] [--threads N]
                       [--no-ftz] [--memory-format channels_last|channels_first]
                       [--data DIR] [--spec examples/mnist-cnn.toml]

s_per_epoch = wall time of the whole fit (every epoch's training steps and its validation
pass; for Keras model.fit, which includes its first-call graph tracing) / epochs, as
peer_mlp.py measures. epoch_s lists each epoch's time. peak_rss_mb is this process's peak
resident set (getrusage). --subset N trains and validates on the first N training samples
only (smoke tests); the test set is always the full 10,000.

PyTorch: default initialisation, denormals flushed (as TensorFlow does by default; --no-ftz
turns flushing off, see ../shared/peers/README.md), torch.set_num_threads(--threads, default
the cores this process may use, which is PyTorch's own default on this machine). Memory
format defaults to channels_last (NHWC, as Keras/TensorFlow use on CPU): on the project's
2-core CPU its training steps were level with channels_first within noise and its inference
forward (validation, test) 1.3-1.7x faster in paired runs; --memory-format channels_first
gives plain NCHW."""
import argparse, json, os, resource, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers"))
sys.path.insert(0, os.environ.get("KILN_PEERS_DIR", ""))
import mnist_idx
import numpy as np

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--framework", required=True, choices=["keras", "pytorch", "torch"])
parser.add_argument("--data", default=os.path.join(
    os.environ.get("KILN_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")),
    "mnist"), help="directory with the four MNIST IDX .gz files (default $KILN_DATA/mnist)")
parser.add_argument("--epochs", type=int, default=12)
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--validation-split", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--subset", type=int, default=0, help="use only the first N training samples (0: all)")
parser.add_argument("--threads", type=int, default=0,
                    help="compute threads (default: PyTorch set to the usable cores; TensorFlow left at its default)")
parser.add_argument("--no-ftz", action="store_true", help="PyTorch: do not flush denormals to zero")
parser.add_argument("--memory-format", choices=["channels_last", "channels_first"], default="channels_last",
                    help="PyTorch tensor layout for the convolutions (Keras is always channels_last on CPU)")
parser.add_argument("--spec", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                                                   "mnist-cnn.toml"),
                    help="kiln spec whose [model].layers both peers build (default examples/mnist-cnn.toml)")
args = parser.parse_args()
framework = "pytorch" if args.framework == "torch" else args.framework
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

def read_spec_layers(path):
    """The spec's layers; the leading reshape to 28x28x1 is the peers' input shape already."""
    import tomllib
    layers = tomllib.load(open(path, "rb"))["model"]["layers"]
    return [l for l in layers if l["type"] != "reshape"]


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def keras_layers(spec):
    from keras import layers
    made = []
    for l in spec:
        t = l["type"]
        if t == "conv2d":
            made.append(layers.Conv2D(l["filters"], pair(l["kernel_size"]), strides=pair(l.get("strides", 1)),
                                      padding=l.get("padding", "valid"), activation=l.get("activation")))
        elif t == "max_pooling2d":
            made.append(layers.MaxPooling2D(pool_size=pair(l.get("pool_size", 2))))
        elif t == "batch_normalization":
            made.append(layers.BatchNormalization())
        elif t == "activation":
            made.append(layers.Activation(l["activation"]))
        elif t == "dropout":
            made.append(layers.Dropout(l["rate"]))
        elif t == "flatten":
            made.append(layers.Flatten())
        elif t == "dense":
            made.append(layers.Dense(l["units"], activation=l.get("activation")))
        else:
            sys.exit(f"peer_cnn.py: layer type {t} is not translated")
    return made


def torch_layers(spec):
    """The same layers for PyTorch, tracking (channels, height, width) for the sizes it
    needs; the final softmax is left to CrossEntropyLoss."""
    from torch import nn
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    c, h, w, flat = 1, 28, 28, None
    made = []
    for i, l in enumerate(spec):
        t, act = l["type"], l.get("activation")
        if t == "conv2d":
            (kh, kw), (sh, sw) = pair(l["kernel_size"]), pair(l.get("strides", 1))
            same = l.get("padding", "valid") == "same"
            made.append(nn.Conv2d(c, l["filters"], (kh, kw), stride=(sh, sw), padding="same" if same else 0))
            c = l["filters"]
            h, w = ((h + sh - 1) // sh, (w + sw - 1) // sw) if same else ((h - kh) // sh + 1, (w - kw) // sw + 1)
        elif t == "max_pooling2d":
            ph, pw = pair(l.get("pool_size", 2))
            made.append(nn.MaxPool2d((ph, pw)))
            h, w = h // ph, w // pw
        elif t == "batch_normalization":
            # Keras's momentum 0.99 is PyTorch's 0.01; epsilon 1e-3 as Keras.
            made.append(nn.BatchNorm2d(c, eps=1e-3, momentum=0.01) if flat is None else
                        nn.BatchNorm1d(flat, eps=1e-3, momentum=0.01))
        elif t == "activation":
            pass
        elif t == "dropout":
            made.append(nn.Dropout(l["rate"]))
        elif t == "flatten":
            made.append(nn.Flatten())
            flat = c * h * w
        elif t == "dense":
            made.append(nn.Linear(flat, l["units"]))
            flat = l["units"]
        else:
            sys.exit(f"peer_cnn.py: layer type {t} is not translated")
        if act == "softmax" and i == len(spec) - 1:
            continue
        if act or t == "activation":
            made.append(acts[act or l["activation"]]())
    return made


spec_layers = read_spec_layers(args.spec)
(x_train, y_train), (x_test, y_test) = mnist_idx.load_data(args.data)
if args.subset:
    x_train, y_train = x_train[:args.subset], y_train[:args.subset]
x_train = (x_train.astype("float32") / 255.0)[..., None]  # N, 28, 28, 1
x_test = (x_test.astype("float32") / 255.0)[..., None]
y_train, y_test = y_train.astype("int64"), y_test.astype("int64")
# Keras's validation_split: the last fraction, taken before shuffling.
split_at = int(np.floor(len(x_train) * (1.0 - args.validation_split)))
n_train, n_val = split_at, len(x_train) - split_at

if framework == "keras":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers
    if args.threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)), *keras_layers(spec_layers)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    epoch_ends = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation pass
            epoch_ends.append(time.perf_counter())

    t0, c0 = time.perf_counter(), os.times()
    hist = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch,
                     validation_split=args.validation_split if n_val else 0.0, shuffle=True,
                     callbacks=[EpochClock()], verbose=0)
    fit_s, c1 = time.perf_counter() - t0, os.times()
    t1 = time.perf_counter()
    test_acc = model.evaluate(x_test, y_test, batch_size=args.batch, verbose=0)[1]
    eval_s = time.perf_counter() - t1
    val_acc = hist.history.get("val_accuracy", [None])[-1]
    peer = "keras-" + keras.__version__ + "-" + keras.backend.backend()
    threads, ftz, memory_format = args.threads or None, True, "channels_last"
else:
    import torch
    from torch import nn
    ftz = not args.no_ftz
    torch.set_flush_denormal(ftz)
    torch.set_num_threads(args.threads or cores)
    torch.manual_seed(args.seed)
    fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    x = torch.from_numpy(x_train).permute(0, 3, 1, 2).contiguous()  # N, 1, 28, 28
    y = torch.from_numpy(y_train)
    x_tr, y_tr, x_val, y_val = x[:split_at], y[:split_at], x[split_at:], y[split_at:]
    xt = torch.from_numpy(x_test).permute(0, 3, 1, 2).contiguous()
    yt = torch.from_numpy(y_test)
    model = nn.Sequential(*torch_layers(spec_layers)).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(xs, ys):  # in batches, as Keras validates and evaluates
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(xs), args.batch):
                out = model(xs[i:i + args.batch].contiguous(memory_format=fmt))
                loss += loss_fn(out, ys[i:i + args.batch]).item() * len(out)
                correct += (out.argmax(1) == ys[i:i + args.batch]).sum().item()
        return correct / len(xs), loss / len(xs)

    epoch_ends, val_acc = [], None
    t0, c0 = time.perf_counter(), os.times()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n_train)
        for i in range(0, n_train, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx].contiguous(memory_format=fmt)), y_tr[idx])
            loss.backward()
            opt.step()
        if n_val:
            val_acc, val_loss = evaluate(x_val, y_val)
        epoch_ends.append(time.perf_counter())
        print(f"epoch {epoch + 1}: loss {loss.item():.4f} val_acc {val_acc}", file=sys.stderr)
    fit_s, c1 = time.perf_counter() - t0, os.times()
    t1 = time.perf_counter()
    test_acc = evaluate(xt, yt)[0]
    eval_s = time.perf_counter() - t1
    peer = "pytorch-" + torch.__version__ + ("-ftz" if ftz else "")
    threads, memory_format = torch.get_num_threads(), args.memory_format

epoch_s = [round(b - a, 3) for a, b in zip([t0] + epoch_ends[:-1], epoch_ends)]
print(json.dumps({"framework": framework, "peer": peer, "model": os.path.basename(args.spec), "batch": args.batch,
                  "epochs": args.epochs, "seed": args.seed, "subset": args.subset or None,
                  "train_samples": n_train, "val_samples": n_val, "threads": threads, "cores": cores,
                  "ftz": ftz, "memory_format": memory_format,
                  "fit_s": round(fit_s, 3), "fit_cpu_s": round(c1.user + c1.system - c0.user - c0.system, 2),
                  "s_per_epoch": round(fit_s / args.epochs, 4), "epoch_s": epoch_s,
                  "eval_s": round(eval_s, 3), "test_acc": round(float(test_acc), 4),
                  "val_acc_last": None if val_acc is None else round(float(val_acc), 4),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
