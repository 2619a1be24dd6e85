//! The reference MLP (784-512-10, ReLU, dropout 0.2, softmax; Adam 1e-3; 10 epochs of
//! batch 64; the last 20% of the training set held out for validation) built and trained
//! through the library alone — the same model `kiln train examples/mnist-mlp.toml` trains.
//!
//!     cargo run --release -p kiln --example mnist_mlp
//!
//! MNIST is looked for in $KILN_DATA/mnist and ~/.cache/kiln/mnist (see `load_mnist`).

use kiln::data::{load_mnist, Normalization};
use kiln::nn::{Activation, Dense, Dropout, Flatten, Loss, Sequential};
use kiln::optim::Adam;
use kiln::train::{EvalData, FitOptions, TrainData, Trainer, Validation};

fn main() -> kiln::Result<()> {
    let seed = 42;
    let mut mnist = load_mnist(None)?;
    // Pixels 0–255 to 0–1, fitted on the training part only (a uniform scale here).
    let scale = Normalization::Scale { max: 255.0 }.fit(&mnist.train)?;
    for split in [&mut mnist.train, &mut mnist.test] {
        let size = split.sample_size();
        scale.apply(&mut split.features, size)?;
    }
    let mut model = Sequential::builder(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(512).activation(Activation::Relu))
        .add(Dropout::new(0.2))
        .add(Dense::new(10).activation(Activation::Softmax))
        .build(seed)?;
    let mut trainer = Trainer::new(Adam::default(), Loss::sparse_categorical_crossentropy(), seed);
    let options = FitOptions {
        epochs: 10,
        batch_size: 64,
        validation: Validation::Split(0.2),
        seed,
        verbose: true,
        ..FitOptions::default()
    };
    let history = trainer.fit(&mut model, TrainData::Samples(&mnist.train), &options)?;
    let test = trainer.evaluate(&mut model, EvalData::Samples(&mnist.test))?;
    println!(
        "test_loss: {:.4} - test_accuracy: {:.4} - {:.3} s/epoch (median of {})",
        test.loss,
        test.accuracy,
        history.median_epoch_seconds(),
        history.epochs.len()
    );
    Ok(())
}
