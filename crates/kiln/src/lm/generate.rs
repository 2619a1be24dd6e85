//! Text generation: the GPT run one position at a time outside the tape, with a key/value
//! cache so each new token costs one position's work instead of the whole context's.
//!
//! Every output element is computed by the same sequence of floating-point operations
//! whether its row is fed alone or in a block, so the cached path and the uncached one
//! (which recomputes the keys and values of the whole window for every token) produce
//! bit-identical logits and therefore the same tokens for a seed.
//!
//! The window: a model with learned positions cannot slide its context one token at a
//! time and keep its cache (every position would shift). When the window is full, the
//! oldest half is dropped and the cache rebuilt from the rest, so each prediction sees at
//! least half a context of history. Both paths follow this rule.

use std::ops::Range;

use rayon::prelude::*;

use super::gpt::{BlockParams, Gpt};
use crate::error::{Error, Result};
use crate::kernels::lanes::{axpy, dot};
use crate::ops::layer_norm::{normalize_row, row_moments};
use crate::ops::softmax::softmax_in_place;
use crate::params::ParamId;
use crate::rng::Rng;

/// Keys and values of every position fed so far, per layer (context × width each).
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(model: &Gpt) -> KvCache {
        let c = model.config();
        let size = c.context * c.width;
        KvCache {
            keys: vec![vec![0.0; size]; c.layers],
            values: vec![vec![0.0; size]; c.layers],
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Gpt {
    /// Feeds `tokens` after the positions already in `cache` and writes the logits that
    /// predict the token after the last one into `logits` (vocabulary-long).
    pub fn feed(&self, cache: &mut KvCache, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        let c = &self.layout.config;
        let (start, rows, width) = (cache.len, tokens.len(), c.width);
        if rows == 0 {
            return Err(Error::too_few("tokens to feed", 0, 1));
        }
        if start + rows > c.context {
            return Err(Error::shape(
                "generation cache",
                format!("at most the model's context of {} positions", c.context),
                format!("{} positions", start + rows),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(Error::TokenOutOfRange {
                token: bad as usize,
                vocab: self.vocab,
            });
        }
        let value = |id: ParamId| self.params.get(id).value.data();
        let (tok, pos) = (value(self.layout.tokens), value(self.layout.positions));
        let mut x = vec![0.0f32; rows * width];
        for (r, (row, &id)) in x.chunks_exact_mut(width).zip(tokens).enumerate() {
            let (t, p) = (
                &tok[id as usize * width..][..width],
                &pos[(start + r) * width..][..width],
            );
            row.iter_mut()
                .zip(t.iter().zip(p))
                .for_each(|(x, (t, p))| *x = t + p);
        }
        for (layer, block) in self.layout.blocks.iter().enumerate() {
            self.block_rows(block, layer, cache, start, &mut x);
        }
        cache.len = start + rows;
        // Only the last position's prediction is needed.
        let last = &mut x[(rows - 1) * width..];
        norm_rows(
            last,
            width,
            value(self.layout.ln_f.0),
            value(self.layout.ln_f.1),
            c.layer_norm_epsilon,
        );
        let head = value(self.layout.head);
        logits.clear();
        logits.resize(head.len() / width, 0.0);
        // Vocabulary rows split among the threads; each logit is one dot product, the same
        // whichever thread computes it.
        logits
            .par_chunks_mut(HEAD_ROWS_PER_TASK)
            .zip(head.par_chunks(HEAD_ROWS_PER_TASK * width))
            .for_each(|(logits, head)| head_logits(last, head, logits));
        Ok(())
    }

    /// One block on rows at positions `start..`, writing their keys and values into the cache.
    fn block_rows(&self, b: &BlockParams, layer: usize, cache: &mut KvCache, start: usize, x: &mut [f32]) {
        let c = &self.layout.config;
        let value = |id: ParamId| self.params.get(id).value.data();
        let (width, eps) = (c.width, c.layer_norm_epsilon);
        let rows = x.len() / width;
        let mut h = x.to_vec();
        norm_rows(&mut h, width, value(b.ln_1.0), value(b.ln_1.1), eps);
        let mut qkv = vec![0.0f32; rows * 3 * width];
        linear_rows(&h, width, value(b.qkv.0), value(b.qkv.1), &mut qkv);
        for (r, row) in qkv.chunks_exact(3 * width).enumerate() {
            let at = (start + r) * width;
            cache.keys[layer][at..at + width].copy_from_slice(&row[width..2 * width]);
            cache.values[layer][at..at + width].copy_from_slice(&row[2 * width..]);
        }
        let head = width / c.heads;
        let scale = 1.0 / (head as f32).sqrt();
        let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
        let mut attended = vec![0.0f32; rows * width];
        let mut p = vec![0.0f32; start + rows];
        for (r, out) in attended.chunks_exact_mut(width).enumerate() {
            let i = start + r;
            for hd in 0..c.heads {
                let q = &qkv[r * 3 * width + hd * head..][..head];
                for (j, p) in p[..=i].iter_mut().enumerate() {
                    *p = dot(q, &keys[j * width + hd * head..][..head]) * scale;
                }
                softmax_in_place(&mut p[..=i]);
                let out = &mut out[hd * head..][..head];
                for (j, &w) in p[..=i].iter().enumerate() {
                    axpy(out, w, &values[j * width + hd * head..][..head]);
                }
            }
        }
        let mut projected = vec![0.0f32; rows * width];
        linear_rows(&attended, width, value(b.proj.0), value(b.proj.1), &mut projected);
        x.iter_mut().zip(&projected).for_each(|(x, a)| *x += a);
        h.copy_from_slice(x);
        norm_rows(&mut h, width, value(b.ln_2.0), value(b.ln_2.1), eps);
        let hidden = c.hidden();
        let mut f = vec![0.0f32; rows * hidden];
        linear_rows(&h, width, value(b.fc.0), value(b.fc.1), &mut f);
        let activation = c.activation.op();
        f.iter_mut().for_each(|v| *v = activation.f(*v));
        linear_rows(&f, hidden, value(b.fc_out.0), value(b.fc_out.1), &mut projected);
        x.iter_mut().zip(&projected).for_each(|(x, m)| *x += m);
    }
}

/// LayerNorm of each row in place, with the training op's arithmetic.
fn norm_rows(x: &mut [f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    let mut normalized = vec![0.0f32; width];
    for row in x.chunks_exact_mut(width) {
        let (mean, inv_std) = row_moments(row, eps);
        normalize_row(row, mean, inv_std, gamma, beta, &mut normalized);
        row.copy_from_slice(&normalized);
    }
}

/// Vocabulary rows per task of the output layer.
const HEAD_ROWS_PER_TASK: usize = 2048;

crate::kernels::simd::widest_simd! {
    /// `logits[v] = row · head[v]` for each row `head[v]` of the output layer.
    fn head_logits(row: &[f32], head: &[f32], logits: &mut [f32]) => head_logits_with
}

#[inline(always)]
fn head_logits_with(row: &[f32], head: &[f32], logits: &mut [f32]) {
    for (l, w) in logits.iter_mut().zip(head.chunks_exact(row.len())) {
        *l = dot(row, w);
    }
}

/// `out = x · kernel + bias` row by row (x: rows × inputs, kernel: inputs × outputs), on
/// one thread: decoding is bound by reading the weights, and two threads splitting the
/// columns read memory no faster than one (each would stream half of every kernel row).
fn linear_rows(x: &[f32], inputs: usize, kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    linear_columns(x, inputs, kernel, bias, 0..bias.len(), out);
}

crate::kernels::simd::widest_simd! {
    /// Columns `cols` of `x · kernel + bias` into `out` (rows × cols.len()). Each output
    /// element is the bias plus its products added in input order, the same whether its
    /// row comes alone or with others and whichever block its column falls in; four rows
    /// share each kernel row's loads. Compiled for AVX-512 and AVX2 too (the baseline
    /// target runs the row updates 4 lanes wide); elementwise multiply-adds round the same
    /// at any width.
    fn linear_columns(x: &[f32], inputs: usize, kernel: &[f32], bias: &[f32], cols: Range<usize>, out: &mut [f32]) => linear_columns_with
}

#[inline(always)]
fn linear_columns_with(
    x: &[f32],
    inputs: usize,
    kernel: &[f32],
    bias: &[f32],
    cols: Range<usize>,
    out: &mut [f32],
) {
    let (outputs, n) = (bias.len(), cols.len());
    for (x4, out4) in x.chunks(4 * inputs).zip(out.chunks_mut(4 * n)) {
        out4.chunks_exact_mut(n)
            .for_each(|o| o.copy_from_slice(&bias[cols.clone()]));
        for (k, w) in kernel.chunks_exact(outputs).enumerate() {
            let w = &w[cols.clone()];
            for (xr, o) in x4.chunks_exact(inputs).zip(out4.chunks_exact_mut(n)) {
                axpy(o, xr[k], w);
            }
        }
    }
}

/// How the next token is drawn from the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Logits are divided by this; 0 picks the most likely token every time.
    pub temperature: f32,
    /// Only the k most likely tokens may be drawn.
    pub top_k: Option<usize>,
    /// Only the most likely tokens whose probabilities add up to p may be drawn (nucleus).
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::setting("--temperature", self.temperature, "a number ≥ 0"));
        }
        if self.top_k == Some(0) {
            return Err(Error::setting("--top-k", 0, "at least 1"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::setting("--top-p", p, "a number in (0, 1]"));
            }
        }
        Ok(())
    }

    /// Draws a token id from `logits`.
    pub fn draw(&self, logits: &[f32], rng: &mut Rng) -> u32 {
        // Best first: the larger logit, then the lower id (a strict order, so selecting
        // and sorting agree with a full sort).
        let best = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.temperature == 0.0 {
            let top = logits.iter().copied().enumerate().min_by(best);
            return top.map_or(0, |(id, _)| id as u32);
        }
        let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        if let Some(k) = self.top_k.filter(|&k| k < ranked.len()) {
            // Only the k best need ordering: select them, then sort those.
            ranked.select_nth_unstable_by(k - 1, best);
            ranked.truncate(k);
        }
        ranked.sort_by(best);
        ranked.truncate(self.top_k.unwrap_or(ranked.len()).min(ranked.len()));
        let mut probs: Vec<f32> = ranked.iter().map(|&(_, l)| l / self.temperature).collect();
        softmax_in_place(&mut probs);
        if let Some(p) = self.top_p {
            let mut total = 0.0;
            let keep = probs.iter().take_while(|&&q| {
                let before = total;
                total += q;
                before < p
            });
            let n = keep.count().max(1);
            probs.truncate(n);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= sum);
        }
        draw_ranked(&ranked, &probs, rng)
    }
}

/// The id at the cumulative probability a uniform draw falls on (`ranked` best first,
/// `probs` their probabilities, possibly fewer).
fn draw_ranked(ranked: &[(usize, f32)], probs: &[f32], rng: &mut Rng) -> u32 {
    let u = rng.next_f32();
    let mut cumulative = 0.0;
    for (i, q) in probs.iter().enumerate() {
        cumulative += q;
        if u < cumulative {
            return ranked[i].0 as u32;
        }
    }
    ranked[probs.len() - 1].0 as u32
}

/// Checks a generation request before any output: the sampling settings, and a prompt
/// that is not empty and fits the context.
pub fn check_request(model: &Gpt, prompt: &[u32], sampling: &Sampling) -> Result<()> {
    sampling.validate()?;
    let context = model.config().context;
    if prompt.is_empty() {
        return Err(Error::too_few(
            "tokens in the prompt (give at least one character or token)",
            0,
            1,
        ));
    }
    if prompt.len() > context {
        return Err(Error::unsupported(
            format!("a prompt {} tokens long", prompt.len()),
            format!("it is longer than the model's context of {context}"),
        ));
    }
    Ok(())
}

/// Generates `count` tokens after `prompt`, calling `on_token` with each as it is drawn.
/// With `use_cache` false, the keys and values of the whole window are recomputed for
/// every token (the reference the cached path must equal).
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    count: usize,
    sampling: &Sampling,
    use_cache: bool,
    on_token: &mut dyn FnMut(u32),
) -> Result<Vec<u32>> {
    check_request(model, prompt, sampling)?;
    let context = model.config().context;
    let mut rng = Rng::new(sampling.seed);
    let mut cache = KvCache::new(model);
    let mut window = prompt.to_vec();
    let (mut logits, mut out) = (Vec::new(), Vec::with_capacity(count));
    for _ in 0..count {
        if !use_cache {
            cache.clear();
        }
        let fed = cache.len();
        model.feed(&mut cache, &window[fed..], &mut logits)?;
        let next = sampling.draw(&logits, &mut rng);
        on_token(next);
        out.push(next);
        if window.len() == context {
            window.drain(..context - context / 2);
            cache.clear();
        }
        window.push(next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::gpt::tests::tiny_config;

    fn tiny() -> Gpt {
        Gpt::new(tiny_config(), 11, 3).unwrap()
    }

    #[test]
    fn cached_logits_match_the_training_forward() {
        let mut model = tiny();
        let tokens = [3u32, 1, 4, 1, 5, 9];
        let full = model.logits(&tokens, 1).unwrap();
        let mut cache = KvCache::new(&model);
        let mut logits = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            model.feed(&mut cache, &[t], &mut logits).unwrap();
            for (a, b) in logits.iter().zip(&full[i * 11..(i + 1) * 11]) {
                assert!((a - b).abs() < 1e-4, "position {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn feeding_a_block_equals_feeding_one_at_a_time_bit_for_bit() {
        let model = tiny();
        let (mut one, mut block) = (KvCache::new(&model), KvCache::new(&model));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for t in [2u32, 7, 1, 8, 2] {
            model.feed(&mut one, &[t], &mut a).unwrap();
        }
        model.feed(&mut block, &[2, 7, 1, 8, 2], &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cached_and_uncached_generation_draw_the_same_tokens() {
        let model = tiny();
        let sampling = Sampling {
            temperature: 0.9,
            top_k: Some(5),
            top_p: Some(0.95),
            seed: 42,
        };
        // 40 tokens through a context of 6: the window is halved many times.
        let cached = generate(&model, &[1, 2], 40, &sampling, true, &mut |_| {}).unwrap();
        let uncached = generate(&model, &[1, 2], 40, &sampling, false, &mut |_| {}).unwrap();
        assert_eq!(cached, uncached);
        assert_eq!(cached.len(), 40);
        let other_seed = generate(
            &model,
            &[1, 2],
            40,
            &Sampling { seed: 43, ..sampling },
            true,
            &mut |_| {},
        )
        .unwrap();
        assert_ne!(cached, other_seed);
    }

    #[test]
    fn sampling_rules() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        assert_eq!(greedy.draw(&logits, &mut rng), 1);
        let top2 = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            ..greedy.clone()
        };
        for _ in 0..200 {
            assert!(matches!(top2.draw(&logits, &mut rng), 1 | 3));
        }
        // A nucleus of 0.3 holds only the most likely token (p ≈ 0.45).
        let nucleus = Sampling {
            temperature: 1.0,
            top_p: Some(0.3),
            ..greedy.clone()
        };
        for _ in 0..50 {
            assert_eq!(nucleus.draw(&logits, &mut rng), 1);
        }
    }

    /// Greedy picks and top-k draws select instead of sorting the whole vocabulary: the
    /// draws equal those of a full sort, ties going to the lower id.
    #[test]
    fn selecting_the_best_equals_sorting_everything() {
        let logits: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        // 10.0 first occurs at the lowest id with (i · 37) mod 101 = 100.
        let first_best = (0..500).find(|i| (i * 37) % 101 == 100).unwrap() as u32;
        assert_eq!(greedy.draw(&logits, &mut Rng::new(1)), first_best);
        for k in [1, 2, 7, 499, 500, 900] {
            let sampling = Sampling {
                temperature: 0.7,
                top_k: Some(k),
                ..greedy.clone()
            };
            let (mut rng, mut reference_rng) = (Rng::new(k as u64), Rng::new(k as u64));
            for _ in 0..100 {
                let drawn = sampling.draw(&logits, &mut rng);
                assert_eq!(
                    drawn,
                    full_sort_draw(&logits, k, 0.7, &mut reference_rng),
                    "k = {k}"
                );
            }
        }
    }

    /// The draw as it was made before selection: every logit sorted, best first.
    fn full_sort_draw(logits: &[f32], k: usize, temperature: f32, rng: &mut Rng) -> u32 {
        let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k.min(ranked.len()));
        let mut probs: Vec<f32> = ranked.iter().map(|&(_, l)| l / temperature).collect();
        softmax_in_place(&mut probs);
        draw_ranked(&ranked, &probs, rng)
    }

    #[test]
    fn bad_requests_are_errors() {
        let model = tiny();
        let ok = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        let err = |prompt: &[u32], s: &Sampling| {
            generate(&model, prompt, 3, s, true, &mut |_| {})
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[1; 7], &ok).contains("longer than the model's context of 6"));
        assert!(err(&[], &ok).contains("tokens in the prompt"));
        assert!(err(
            &[1],
            &Sampling {
                top_k: Some(0),
                ..ok.clone()
            }
        )
        .contains("--top-k"));
        assert!(err(
            &[1],
            &Sampling {
                top_p: Some(1.5),
                ..ok.clone()
            }
        )
        .contains("--top-p"));
        assert!(err(
            &[1],
            &Sampling {
                temperature: -1.0,
                ..ok.clone()
            }
        )
        .contains("--temperature"));
        assert!(err(&[11], &ok).contains("outside the vocabulary"));
    }
}
