//! Micro-benchmarks of the reference model's hot kernels (`cargo bench -p kiln`): its three
//! matmul shapes (forward, weight gradient, input gradient), the inference product on the
//! first layer at batch 1 and 1024 (kiln's row-stable kernel beside gemm), the fused
//! softmax + cross-entropy, and the Adam update over the first layer's 401,920 parameters.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kiln::autograd::{Tape, Workspace};
use kiln::ops::matmul::{gemm, MatRef};
use kiln::ops::stable_matmul::stable_gemm;
use kiln::ops::Targets;
use kiln::optim::OptimizerSpec;
use kiln::params::ParamStore;
use kiln::rng::Rng;
use kiln::{Shape, Tensor};

const BATCH: usize = 64;
const INPUT: usize = 784;
const HIDDEN: usize = 512;
const CLASSES: usize = 10;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn matmul_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    let x = random(BATCH * INPUT, 1);
    let w = random(INPUT * HIDDEN, 2);
    let dy = random(BATCH * HIDDEN, 3);
    let w_t = random(HIDDEN * INPUT, 4);
    let mut out = vec![0.0; BATCH * HIDDEN];
    let mut dw = vec![0.0; INPUT * HIDDEN];
    let mut dx = vec![0.0; BATCH * INPUT];
    let flops = (2 * BATCH * INPUT * HIDDEN) as u64;
    group.throughput(Throughput::Elements(flops));
    group.bench_function("forward x(64x784)·W(784x512)", |b| {
        b.iter(|| {
            gemm(
                BATCH,
                HIDDEN,
                INPUT,
                &mut out,
                false,
                MatRef::row_major(&x, INPUT),
                MatRef::row_major(&w, HIDDEN),
            )
        })
    });
    group.bench_function("weight grad xT(784x64)·dY(64x512)", |b| {
        let x_t = MatRef {
            data: &x,
            row_stride: 1,
            col_stride: INPUT,
        };
        b.iter(|| {
            gemm(
                INPUT,
                HIDDEN,
                BATCH,
                &mut dw,
                true,
                x_t,
                MatRef::row_major(&dy, HIDDEN),
            )
        })
    });
    group.bench_function("input grad dY(64x512)·WT(512x784)", |b| {
        b.iter(|| {
            gemm(
                BATCH,
                INPUT,
                HIDDEN,
                &mut dx,
                true,
                MatRef::row_major(&dy, HIDDEN),
                MatRef::row_major(&w_t, INPUT),
            )
        })
    });
    group.finish();
}

/// The first layer's product at inference, batch 1 and 1024: the row-stable kernel `predict`
/// uses, and gemm on the same shape for reference.
fn inference_product(c: &mut Criterion) {
    let mut group = c.benchmark_group("inference");
    let w = random(INPUT * HIDDEN, 2);
    for rows in [1, 1024] {
        let x = random(rows * INPUT, 5);
        let mut y = vec![0.0; rows * HIDDEN];
        group.throughput(Throughput::Elements((2 * rows * INPUT * HIDDEN) as u64));
        group.bench_function(format!("stable_gemm x({rows}x784)·W(784x512)"), |b| {
            b.iter(|| stable_gemm(rows, HIDDEN, INPUT, black_box(&x), &w, &mut y))
        });
        group.bench_function(format!("gemm x({rows}x784)·W(784x512)"), |b| {
            b.iter(|| {
                let (lhs, rhs) = (
                    MatRef::row_major(black_box(&x), INPUT),
                    MatRef::row_major(&w, HIDDEN),
                );
                gemm(rows, HIDDEN, INPUT, &mut y, false, lhs, rhs)
            })
        });
    }
    group.finish();
}

fn softmax_cross_entropy(c: &mut Criterion) {
    let logits = random(BATCH * CLASSES, 5);
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % CLASSES as u32).collect();
    let mut params = ParamStore::new();
    let mut ws = Workspace::new();
    c.bench_function("softmax_cross_entropy 64x10 forward+backward", |b| {
        b.iter(|| {
            let mut tape = Tape::new(&mut params, &mut ws);
            let x = tape.leaf(&logits, Shape::new(&[BATCH, CLASSES]), true);
            let loss = tape.softmax_cross_entropy(x, Targets::Classes(&labels)).unwrap();
            tape.backward(loss);
            black_box(tape.grad(x).map(|g| g[0]));
        })
    });
}

fn adam_update(c: &mut Criterion) {
    let mut params = ParamStore::new();
    params.add(
        "w",
        Tensor::new(&[INPUT, HIDDEN], random(INPUT * HIDDEN, 6)).unwrap(),
    );
    for p in params.iter_mut() {
        p.grad.copy_from_slice(&random(INPUT * HIDDEN, 7));
    }
    let mut adam = OptimizerSpec::default().build();
    let mut group = c.benchmark_group("optimizer");
    group.throughput(Throughput::Elements((INPUT * HIDDEN) as u64));
    group.bench_function("adam 784x512", |b| b.iter(|| adam.step(&mut params, 1e-3)));
    group.finish();
}

fn dropout(c: &mut Criterion) {
    let x = random(BATCH * HIDDEN, 8);
    let mut params = ParamStore::new();
    let mut ws = Workspace::new();
    let mut rng = Rng::new(9);
    c.bench_function("dropout 64x512 forward", |b| {
        b.iter(|| {
            let mut tape = Tape::new(&mut params, &mut ws);
            let v = tape.leaf(&x, Shape::new(&[BATCH, HIDDEN]), true);
            let y = tape.dropout(v, 0.2, &mut rng).unwrap();
            black_box(tape.value(y)[0]);
        })
    });
    let mut r = Rng::new(3);
    c.bench_function("rng 16K next_u64", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for _ in 0..BATCH * HIDDEN / 2 {
                acc ^= r.next_u64();
            }
            black_box(acc)
        })
    });
}

criterion_group!(
    benches,
    matmul_shapes,
    inference_product,
    softmax_cross_entropy,
    adam_update,
    dropout
);
criterion_main!(benches);
