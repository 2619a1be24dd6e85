//! `kiln-bench`: the measurements behind kiln's performance figures, printed as JSON lines
//! so bench scripts can put them beside the peers' numbers.
//!
//! - `roofline`: the machine's large-matmul rate (GFLOP/s) through kiln's gemm path, and the
//!   rate on each product shape of the reference MLP's training step.
//! - `steps`: time per training step of the reference MLP on synthetic data.
//! - `predict MODEL`: batch-1 latency (p50, p99) and batch-1024 throughput of `predict`.
//! - `conv`: forward and backward time of each of the MNIST CNN's convolution layers (with
//!   its ReLU and max pooling) at one batch, on synthetic data.
//! - `logits MODEL --ids …`: a language model's logits for a sequence, as raw f32, for
//!   comparing with another library's (bench/gpt2.sh).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln::ops::matmul::{gemm, transpose, MatRef};
use serde_json::json;

#[derive(Parser)]
#[command(name = "kiln-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Large-matmul GFLOP/s and the reference model's product shapes.
    Roofline {
        /// Size of the square product used as the machine's peak.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Hidden width and batch of the MLP whose shapes are measured.
        #[arg(long, default_value_t = 512)]
        width: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Time per training step of the reference MLP (synthetic data, no loading).
    Steps {
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        #[arg(long, default_value_t = 512)]
        width: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Dropout rate after the hidden layer (0 disables it).
        #[arg(long, default_value_t = 0.2)]
        dropout: f32,
        #[arg(long, default_value = "adam")]
        optimizer: String,
    },
    /// Forward and backward time of each convolution (with its ReLU and 2×2 max pooling) of
    /// examples/mnist-cnn.toml, at one batch: where a CNN step's time goes, layer by layer.
    Conv {
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Only the layer whose name starts with this (conv1, conv2).
        #[arg(long, default_value = "")]
        only: String,
    },
    /// A language model's logits at every position of one sequence, written as raw
    /// little-endian f32 (positions × vocabulary) to --out.
    Logits {
        model: PathBuf,
        /// Token ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Batched decoding of a language model, as `kiln serve` runs it: SEQUENCES sequences
    /// with prompts of PROMPT tokens, advanced together for TOKENS steps (ms/step, tokens/s).
    Decode {
        model: PathBuf,
        #[arg(long, default_value_t = 1)]
        sequences: usize,
        #[arg(long, default_value_t = 6)]
        prompt: usize,
        #[arg(long, default_value_t = 200)]
        tokens: usize,
    },
    /// Batch-1 latency and batch-1024 throughput of a saved model's predict path.
    Predict {
        model: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Roofline { size, width, batch } => roofline(size, width, batch),
        Command::Predict { model, iterations } => predict(&model, iterations),
        Command::Logits { model, ids, out } => logits(&model, &ids, &out),
        Command::Decode {
            model,
            sequences,
            prompt,
            tokens,
        } => decode(&model, sequences, prompt, tokens),
        Command::Conv {
            batch,
            iterations,
            only,
        } => conv_layers(batch, iterations, &only),
        Command::Steps {
            steps,
            width,
            batch,
            dropout,
            optimizer,
        } => train_steps(steps, width, batch, dropout, &optimizer),
    }
}

/// Best GFLOP/s of `m×k · k×n` over repeated runs lasting at least ~0.3 s.
fn rate(m: usize, k: usize, n: usize, transposed_lhs: bool) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let lhs = if transposed_lhs {
        // a holds the k×m matrix whose transpose is the left operand (a weight gradient).
        MatRef {
            data: &a,
            row_stride: 1,
            col_stride: m,
        }
    } else {
        MatRef::row_major(&a, k)
    };
    let flops = 2.0 * (m * n * k) as f64;
    let mut best = f64::MAX;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 5 || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        gemm(m, n, k, &mut c, false, lhs, MatRef::row_major(&b, n));
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    flops / best / 1e9
}

fn roofline(size: usize, width: usize, batch: usize) -> Result<()> {
    kiln::ops::parallel::on_pool(|| {
        let peak = rate(size, size, size, false);
        println!(
            "{}",
            json!({ "shape": format!("{size}x{size}x{size}"), "gflops": round(peak), "role": "peak" })
        );
        let shapes = [
            ("forward x·W1", batch, 784, width, false),
            ("weight grad x^T·dY1", 784, batch, width, true),
            ("forward h·W2", batch, width, 10, false),
            ("input grad dY2·W2^T", batch, 10, width, false),
            ("weight grad h^T·dY2", width, batch, 10, true),
        ];
        for (role, m, k, n, t) in shapes {
            let g = rate(m, k, n, t);
            println!(
                "{}",
                json!({ "shape": format!("{m}x{k}x{n}"), "role": role, "gflops": round(g), "of_peak": round(g / peak) })
            );
        }
        let mut scratch = vec![0.0; 784 * width];
        let src = vec![1.0; 784 * width];
        let t = Instant::now();
        for _ in 0..100 {
            transpose(&src, 784, width, &mut scratch);
        }
        let per = t.elapsed().as_secs_f64() / 100.0;
        println!(
            "{}",
            json!({ "op": "transpose 784xW", "microseconds": round(per * 1e6) })
        );
    });
    Ok(())
}

fn train_steps(steps: usize, width: usize, batch: usize, dropout: f32, optimizer: &str) -> Result<()> {
    let layers: Vec<kiln::nn::LayerSpec> = serde_json::from_value(json!([
        { "type": "flatten" },
        { "type": "dense", "units": width, "activation": "relu" },
        { "type": "dropout", "rate": dropout },
        { "type": "dense", "units": 10, "activation": "softmax" },
    ]))?;
    let mut model = kiln::nn::Sequential::new(&[28, 28], layers, 1)?;
    let spec: kiln::optim::OptimizerSpec = serde_json::from_value(json!({ "type": optimizer }))?;
    let loss = kiln::nn::Loss {
        kind: kiln::nn::LossKind::SparseCategoricalCrossentropy,
        from_logits: false,
    };
    let mut trainer = kiln::train::Trainer::new(spec, loss, 1);
    let batch_of = |x, labels| kiln::nn::Batch::Samples { x, labels };
    let mut rng = kiln::rng::Rng::new(2);
    let x: Vec<f32> = (0..batch * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    kiln::ops::parallel::on_pool(|| -> Result<()> {
        let _flush = kiln::train::FlushDenormals::enable();
        // As `fit` does: the other worker polls between steps instead of sleeping.
        let _awake = kiln::ops::keep_awake::KeepAwake::start();
        for _ in 0..20 {
            trainer.train_step(&mut model, batch_of(&x, &y))?;
        }
        let t = Instant::now();
        for _ in 0..steps {
            trainer.train_step(&mut model, batch_of(&x, &y))?;
        }
        let per_step = t.elapsed().as_secs_f64() / steps as f64;

        println!(
            "{}",
            json!({ "width": width, "batch": batch, "dropout": dropout, "optimizer": optimizer,
                    "us_per_step": round(per_step * 1e6), "s_per_48k_samples": round(per_step * (48000 / batch) as f64) })
        );
        Ok(())
    })
}

/// Times `conv2d_max_pool` forward alone and forward + backward for the MNIST CNN's two
/// convolution layers: (side, channels in, filters), 3×3 valid, ReLU, 2×2 max pool.
fn conv_layers(batch: usize, iterations: usize, only: &str) -> Result<()> {
    use kiln::autograd::{Tape, Workspace};
    use kiln::ops::conv2d::{Axis, Padding, Window};
    use kiln::tensor::{Shape, Tensor};
    let layers = [
        ("conv1 28x28x1->32", 28, 1, 32),
        ("conv2 13x13x32->64", 13, 32, 64),
    ];
    kiln::ops::parallel::on_pool(|| -> Result<()> {
        let _flush = kiln::train::FlushDenormals::enable();
        let _awake = kiln::ops::keep_awake::KeepAwake::start();
        for (name, side, channels, filters) in layers.into_iter().filter(|l| l.0.starts_with(only)) {
            let axis = |input, kernel, stride| {
                Axis::new(input, kernel, stride, 1, Padding::Valid).expect("the layer fits")
            };
            let conv = Window {
                height: axis(side, 3, 1),
                width: axis(side, 3, 1),
                channels,
            };
            let out_side = side - 2;
            let pool = Window {
                height: axis(out_side, 2, 2),
                width: axis(out_side, 2, 2),
                channels: filters as u32,
            };
            let mut rng = kiln::rng::Rng::new(3);
            let mut random = |n: usize, scale: f32| -> Vec<f32> {
                (0..n).map(|_| (rng.next_f32() - 0.5) * scale).collect()
            };
            let x = random(batch * side * side * channels as usize, 2.0);
            let mut params = kiln::params::ParamStore::new();
            let kernel = params.add(
                "k",
                Tensor::from_shape(
                    Shape::new(&[3, 3, channels as usize, filters]),
                    random(9 * channels as usize * filters, 0.3),
                ),
            );
            let bias = params.add(
                "b",
                Tensor::from_shape(Shape::new(&[filters]), random(filters, 0.1)),
            );
            let mut ws = Workspace::new();
            let x_shape = Shape::new(&[batch, side, side, channels as usize]);
            let mut step = |backward: bool| -> Result<()> {
                let mut tape = Tape::new(&mut params, &mut ws);
                // The first layer's input is data; later layers' inputs need a gradient.
                let xv = tape.leaf(&x, x_shape, channels > 1);
                let (k, b) = (tape.param(kernel), tape.param(bias));
                let y = tape.conv2d_max_pool(xv, k, Some(b), conv, true, pool)?;
                if backward {
                    let seed = vec![1.0; tape.shape(y).numel()];
                    tape.backward_from(y, &seed);
                }
                Ok(())
            };
            let mut time = |backward: bool| -> Result<f64> {
                for _ in 0..iterations / 10 + 1 {
                    step(backward)?;
                }
                let t = Instant::now();
                for _ in 0..iterations {
                    step(backward)?;
                }
                Ok(t.elapsed().as_secs_f64() / iterations as f64 * 1e6)
            };
            let forward = time(false)?;
            let both = time(true)?;
            println!(
                "{}",
                json!({ "layer": name, "batch": batch, "forward_us": forward.round(), "backward_us": (both - forward).round() })
            );
        }
        Ok(())
    })
}

fn predict(path: &std::path::Path, iterations: usize) -> Result<()> {
    let mut artifact = kiln::artifact::load(path)?;
    let size = artifact.model.input_shape().numel();
    let one: Vec<f32> = (0..size).map(|i| (i % 255) as f32 / 255.0).collect();
    let batch: Vec<f32> = (0..size * 1024).map(|i| (i % 255) as f32 / 255.0).collect();
    kiln::ops::parallel::on_pool(|| -> Result<()> {
        for _ in 0..50 {
            artifact.model.predict(&one, 1)?;
        }
        let mut latencies = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            std::hint::black_box(artifact.model.predict(&one, 1)?);
            latencies.push(t.elapsed().as_secs_f64());
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] * 1e6;
        artifact.model.predict(&batch, 1024)?;
        let t = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            std::hint::black_box(artifact.model.predict(&batch, 1024)?);
        }
        let throughput = (rounds * 1024) as f64 / t.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({ "framework": "kiln", "batch1_p50_us": round(pct(0.5)), "batch1_p99_us": round(pct(0.99)),
                    "batch1024_samples_per_s": throughput.round() })
        );
        Ok(())
    })
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn decode(model: &std::path::Path, sequences: usize, prompt: usize, tokens: usize) -> Result<()> {
    use kiln::lm::generate::{decode_step, DecodeKernels, Sampling, Sequence};
    let model = kiln::artifact::load_language_model(model)?;
    let vocab = model.gpt.vocab_size() as u32;
    let mut all: Vec<Sequence> = (0..sequences)
        .map(|i| {
            let ids: Vec<u32> = (0..prompt).map(|p| (i * 31 + p * 7) as u32 % vocab).collect();
            let sampling = Sampling {
                temperature: 0.8,
                top_k: Some(40),
                top_p: None,
                seed: i as u64,
            };
            Sequence::new(&model.gpt, &ids, sampling)
        })
        .collect::<kiln::Result<_>>()?;
    let mut batch: Vec<&mut Sequence> = all.iter_mut().collect();
    let kernels = model
        .decode_kernels()
        .unwrap_or_else(|| DecodeKernels::panels(&model.gpt));
    let panels = Some(&kernels);
    decode_step(&model.gpt, panels, &mut batch)?; // the prompts
    let start = std::time::Instant::now();
    for _ in 1..tokens {
        decode_step(&model.gpt, panels, &mut batch)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let steps = tokens.saturating_sub(1).max(1);
    println!(
        "{}",
        json!({ "sequences": sequences, "ms_per_step": 1000.0 * seconds / steps as f64,
                "tokens_per_s": (steps * sequences) as f64 / seconds })
    );
    Ok(())
}

fn logits(model: &std::path::Path, ids: &[u32], out: &std::path::Path) -> Result<()> {
    let mut model = kiln::artifact::load_language_model(model)?;
    let values = model.gpt.logits(ids, 1)?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(out, bytes)?;
    println!(
        "{}",
        json!({ "positions": ids.len(), "vocab": model.gpt.vocab_size() })
    );
    Ok(())
}
