//! After the first step, a training step allocates nothing: every buffer comes back from
//! the tape's pool. A counting global allocator watches every thread, rayon's workers
//! included.
//!
//! One exception is outside kiln's reach: the `gemm` crate allocates its packing buffers
//! inside every call (heap, not system calls: glibc serves them from its free lists).
//! Allocations made while a gemm call is in flight are counted apart and bounded, so a
//! change in that behaviour shows up here too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln::nn::{Loss, LossKind, Sequential};
use kiln::optim::OptimizerSpec;
use kiln::rng::Rng;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if kiln::ops::matmul::GEMM_CALLS_IN_FLIGHT.load(Ordering::SeqCst) > 0 {
        GEMM_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    } else {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn reference_mlp() -> Sequential {
    let layers = toml::from_str::<toml::Value>(
        r#"layers = [
            { type = "flatten" },
            { type = "dense", units = 512, activation = "relu" },
            { type = "dropout", rate = 0.2 },
            { type = "dense", units = 10, activation = "softmax" },
        ]"#,
    )
    .unwrap()["layers"]
        .clone()
        .try_into()
        .unwrap();
    Sequential::new(&[28, 28], layers, 1).unwrap()
}

#[test]
fn training_steps_allocate_nothing_after_the_first() {
    for optimizer in ["adam", "sgd", "rmsprop"] {
        let mut model = reference_mlp();
        let spec: OptimizerSpec = toml::from_str(&format!("type = \"{optimizer}\"")).unwrap();
        let loss = Loss {
            kind: LossKind::SparseCategoricalCrossentropy,
            from_logits: false,
        };
        let mut trainer = kiln::train::Trainer::new(spec, loss, 3);
        let batch = |x, labels| kiln::nn::Batch::Samples { x, labels };
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..64 * 784).map(|_| rng.next_f32()).collect();
        let y: Vec<u32> = (0..64).map(|i| i % 10).collect();
        let _flush = kiln::train::FlushDenormals::enable();
        kiln::ops::matmul::COUNT_GEMM_CALLS.store(true, Ordering::SeqCst);
        kiln::ops::parallel::on_pool(|| trainer.train_step(&mut model, batch(&x, &y)).unwrap());
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let gemm_before = GEMM_ALLOCATIONS.load(Ordering::SeqCst);
        let mut last_loss = f32::INFINITY;
        const STEPS: usize = 20;
        // As `fit` does: run on a pool worker, so parallel loops use the worker's own deque.
        // (Jobs sent in from outside the pool go through rayon's injector queue, which
        // allocates a block every 63 jobs.)
        kiln::ops::parallel::on_pool(|| {
            for _ in 0..STEPS {
                last_loss = trainer.train_step(&mut model, batch(&x, &y)).unwrap().loss;
            }
        });
        let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
        let in_gemm = GEMM_ALLOCATIONS.load(Ordering::SeqCst) - gemm_before;
        assert_eq!(
            during, 0,
            "{optimizer}: kiln made {during} allocations in {STEPS} steps after the first"
        );
        // Three products per step (forward ×2, weight gradients ×2, one input gradient: 5),
        // each with at most a packing buffer and a flag vector per thread.
        assert!(
            in_gemm <= STEPS * 5 * 4,
            "{optimizer}: gemm made {in_gemm} allocations in {STEPS} steps"
        );
        assert!(last_loss.is_finite());
    }
}
