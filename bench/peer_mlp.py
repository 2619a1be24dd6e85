"""The reference MLP in Keras or PyTorch with a chosen hidden width and batch size, for the
scaling sweep (the shared peer scripts fix 512 and 64). Same model, data handling and
optimizer as ../shared/peers; PyTorch flushes denormals. Prints one JSON line.

    python peer_mlp.py keras|torch MNIST_DIR EPOCHS WIDTH BATCH"""
import json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
sys.path.insert(0, os.environ.get("KILN_PEERS_DIR", ""))
import mnist_idx

framework, root, epochs, width, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
(x_train, y_train), (x_test, y_test) = mnist_idx.load_data(root)

if framework == "keras":
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Flatten(), layers.Dense(width, activation="relu"),
                              layers.Dropout(0.2), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x_train / 255.0, y_train, epochs=epochs, batch_size=batch, validation_split=0.2, verbose=0)
    fit_s = time.perf_counter() - t0
    test_acc = model.evaluate(x_test / 255.0, y_test, verbose=0)[1]
else:
    import torch
    from torch import nn
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    x = torch.from_numpy(x_train.reshape(-1, 784).astype("float32") / 255.0)
    y = torch.from_numpy(y_train.astype("int64"))
    n_val = len(x) // 5
    x_tr, y_tr, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(x_tr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            (model(x_val).argmax(1) == y_val).float().mean().item()
    fit_s = time.perf_counter() - t0
    model.eval()
    xt = torch.from_numpy(x_test.reshape(-1, 784).astype("float32") / 255.0)
    with torch.no_grad():
        test_acc = (model(xt).argmax(1) == torch.from_numpy(y_test.astype("int64"))).float().mean().item()
print(json.dumps({"framework": framework, "width": width, "batch": batch, "epochs": epochs,
                  "s_per_epoch": round(fit_s / epochs, 4), "test_acc": round(float(test_acc), 4)}))
