//! The GPT's inference forward pass: positions fed after those a key/value cache already
//! holds, outside the tape, for one sequence or for several in one batch.
//!
//! Every output element is computed by the same sequence of floating-point operations
//! whether its row is fed alone, in a block of its own sequence's rows, or beside rows of
//! other sequences: the linear layers add each input's product to the bias in input order
//! (a row's result does not depend on which rows share the pass), attention reads only the
//! row's own cache, and LayerNorm and the output layer work row by row. So the cached path,
//! the uncached one and a server's batched decoding all give bit-identical logits, hence
//! the same tokens for a seed.

use std::ops::Range;

use rayon::prelude::*;

use super::gpt::{BlockParams, Gpt};
use crate::error::{Error, Result};
use crate::kernels::lanes::{axpy, dot};
use crate::ops::layer_norm::{normalize_row, row_moments};
use crate::ops::softmax::softmax_in_place;
use crate::params::ParamId;

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

/// One sequence's share of a batched pass: its cache, the tokens to feed after the
/// positions the cache holds, and where the logits predicting the next token go.
pub struct Feed<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: &'a mut Vec<f32>,
}

/// Where a sequence's rows sit in a batched pass.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// The position of its first row (the length of its cache before the pass).
    start: usize,
    /// Its first row in the batch.
    first_row: usize,
    rows: usize,
}

impl Gpt {
    /// Feeds `tokens` after the positions already in `cache` and writes the logits that
    /// predict the token after the last one into `logits` (vocabulary-long).
    pub fn feed(&self, cache: &mut KvCache, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        self.feed_batch(&mut [Feed {
            cache,
            tokens,
            logits,
        }])
    }

    /// One pass over several sequences: each feed's tokens go after its own cache's
    /// positions, all rows through each layer's weights together, and each feed gets the
    /// logits after its last token. A feed's logits are bit-identical to feeding it alone.
    pub fn feed_batch(&self, feeds: &mut [Feed]) -> Result<()> {
        let spans = self.check_feeds(feeds)?;
        let c = &self.layout.config;
        let width = c.width;
        let value = |id: ParamId| self.params.get(id).value.data();
        let (tok, pos) = (value(self.layout.tokens), value(self.layout.positions));
        let total_rows = spans.last().map_or(0, |s| s.first_row + s.rows);
        let mut x = vec![0.0f32; total_rows * width];
        for (feed, span) in feeds.iter().zip(&spans) {
            let rows = x[span.first_row * width..][..span.rows * width].chunks_exact_mut(width);
            for (r, (row, &id)) in rows.zip(feed.tokens).enumerate() {
                let t = &tok[id as usize * width..][..width];
                let p = &pos[(span.start + r) * width..][..width];
                row.iter_mut()
                    .zip(t.iter().zip(p))
                    .for_each(|(x, (t, p))| *x = t + p);
            }
        }
        let mut caches: Vec<&mut KvCache> = feeds.iter_mut().map(|f| &mut *f.cache).collect();
        for (layer, block) in self.layout.blocks.iter().enumerate() {
            self.block_rows(block, layer, &mut caches, &spans, &mut x);
        }
        for (cache, span) in caches.iter_mut().zip(&spans) {
            cache.len = span.start + span.rows;
        }
        // Only each sequence's last position's prediction is needed.
        let mut last: Vec<f32> = spans
            .iter()
            .flat_map(|s| x[(s.first_row + s.rows - 1) * width..][..width].iter().copied())
            .collect();
        norm_rows(
            &mut last,
            width,
            value(self.layout.ln_f.0),
            value(self.layout.ln_f.1),
            c.layer_norm_epsilon,
        );
        let head = value(self.layout.head);
        let mut outputs: Vec<&mut Vec<f32>> = feeds.iter_mut().map(|f| &mut *f.logits).collect();
        head_logits_rows(&last, width, head, &mut outputs);
        Ok(())
    }

    /// Each feed's tokens and room in the context, and where its rows go.
    fn check_feeds(&self, feeds: &[Feed]) -> Result<Vec<Span>> {
        let context = self.layout.config.context;
        let mut spans = Vec::with_capacity(feeds.len());
        let mut first_row = 0;
        for feed in feeds {
            let (start, rows) = (feed.cache.len, feed.tokens.len());
            if rows == 0 {
                return Err(Error::too_few("tokens to feed", 0, 1));
            }
            if start + rows > context {
                return Err(Error::shape(
                    "generation cache",
                    format!("at most the model's context of {context} positions"),
                    format!("{} positions", start + rows),
                ));
            }
            if let Some(&bad) = feed.tokens.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(Error::TokenOutOfRange {
                    token: bad as usize,
                    vocab: self.vocab,
                });
            }
            spans.push(Span {
                start,
                first_row,
                rows,
            });
            first_row += rows;
        }
        Ok(spans)
    }

    /// One block on every row of the batch, writing each row's keys and values into its
    /// sequence's cache.
    fn block_rows(
        &self,
        b: &BlockParams,
        layer: usize,
        caches: &mut [&mut KvCache],
        spans: &[Span],
        x: &mut [f32],
    ) {
        let c = &self.layout.config;
        let value = |id: ParamId| self.params.get(id).value.data();
        let (width, eps) = (c.width, c.layer_norm_epsilon);
        let rows = x.len() / width;
        let mut h = x.to_vec();
        norm_rows(&mut h, width, value(b.ln_1.0), value(b.ln_1.1), eps);
        let mut qkv = vec![0.0f32; rows * 3 * width];
        linear_rows(&h, width, value(b.qkv.0), value(b.qkv.1), &mut qkv);
        for (cache, span) in caches.iter_mut().zip(spans) {
            let rows = qkv[span.first_row * 3 * width..][..span.rows * 3 * width].chunks_exact(3 * width);
            for (r, row) in rows.enumerate() {
                let at = (span.start + r) * width;
                cache.keys[layer][at..at + width].copy_from_slice(&row[width..2 * width]);
                cache.values[layer][at..at + width].copy_from_slice(&row[2 * width..]);
            }
        }
        let mut attended = vec![0.0f32; rows * width];
        let caches: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        let attend = |(span, cache): (&Span, &&KvCache), out: &mut [f32]| {
            let qkv = &qkv[span.first_row * 3 * width..][..span.rows * 3 * width];
            let kv = (&cache.keys[layer][..], &cache.values[layer][..]);
            attend_rows(qkv, kv, span.start, width, c.heads, out);
        };
        let outs = split_by_spans(&mut attended, spans, width);
        if spans.len() > 1 {
            outs.into_par_iter()
                .zip(spans.par_iter().zip(&caches))
                .for_each(|(out, seq)| attend(seq, out));
        } else {
            outs.into_iter()
                .zip(spans.iter().zip(&caches))
                .for_each(|(out, seq)| attend(seq, out));
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

/// `buffer` (rows × width) cut into each span's rows.
fn split_by_spans<'b>(mut buffer: &'b mut [f32], spans: &[Span], width: usize) -> Vec<&'b mut [f32]> {
    spans
        .iter()
        .map(|span| {
            let (own, rest) = std::mem::take(&mut buffer).split_at_mut(span.rows * width);
            buffer = rest;
            own
        })
        .collect()
}

/// Causal attention of one sequence's new rows (positions `start..`, their q|k|v rows in
/// `qkv`) over every position its cache holds up to each row's own.
fn attend_rows(
    qkv: &[f32],
    cache: (&[f32], &[f32]),
    start: usize,
    width: usize,
    heads: usize,
    out: &mut [f32],
) {
    let (keys, values) = cache;
    let rows = out.len() / width;
    let head = width / heads;
    let scale = 1.0 / (head as f32).sqrt();
    let mut p = vec![0.0f32; start + rows];
    for (r, out) in out.chunks_exact_mut(width).enumerate() {
        let i = start + r;
        for hd in 0..heads {
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

/// Vocabulary rows that every row of a batch goes through before the next ones, so they
/// are read from memory once per pass rather than once per row.
const HEAD_ROWS_PER_PANEL: usize = 64;

/// `outputs[i][v] = rows[i] · head[v]`: the output layer for each row (rows × width), its
/// vocabulary rows split among the threads; each logit is one dot product, the same
/// whichever thread computes it and whichever rows share the pass.
fn head_logits_rows(rows: &[f32], width: usize, head: &[f32], outputs: &mut [&mut Vec<f32>]) {
    let vocab = head.len() / width;
    if let [logits] = outputs {
        logits.clear();
        logits.resize(vocab, 0.0);
        logits
            .par_chunks_mut(HEAD_ROWS_PER_TASK)
            .zip(head.par_chunks(HEAD_ROWS_PER_TASK * width))
            .for_each(|(logits, head)| head_logits(rows, head, logits));
        return;
    }
    let n = outputs.len();
    // Logits by vocabulary row, then batch row: each task fills a contiguous block.
    let mut by_token = vec![0.0f32; vocab * n];
    by_token
        .par_chunks_mut(HEAD_ROWS_PER_PANEL * n)
        .zip(head.par_chunks(HEAD_ROWS_PER_PANEL * width))
        .for_each(|(block, head)| {
            let tokens = head.len() / width;
            let mut logits = vec![0.0f32; tokens];
            for (i, row) in rows.chunks_exact(width).enumerate() {
                head_logits(row, head, &mut logits);
                for (t, &l) in logits.iter().enumerate() {
                    block[t * n + i] = l;
                }
            }
        });
    for (i, logits) in outputs.iter_mut().enumerate() {
        logits.clear();
        logits.extend(by_token.iter().skip(i).step_by(n));
    }
}

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

/// Up to this many rows (one sequence decoding, or a short prompt), the product streams
/// each kernel row once for all of them on one thread: decoding one sequence is bound by
/// reading the weights, and two threads splitting the columns read memory no faster than
/// one (each would stream half of every kernel row).
const ROWS_PER_STREAM: usize = 4;

/// Columns of a kernel panel that every row of a larger batch goes through before the
/// next panel: the panel (inputs × 64) stays in the core's L2 while the rows reuse it.
const PANEL_COLUMNS: usize = 64;

/// `out = x · kernel + bias` row by row (x: rows × inputs, kernel: inputs × outputs). A
/// batch of many rows goes panel by panel, the panels shared among the threads, so the
/// weights are read from memory once per pass; each element's arithmetic is the same
/// either way (see `linear_columns`).
fn linear_rows(x: &[f32], inputs: usize, kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    let (rows, outputs) = (x.len() / inputs, bias.len());
    if rows <= ROWS_PER_STREAM || outputs <= PANEL_COLUMNS {
        linear_columns(x, inputs, kernel, bias, 0..outputs, out);
        return;
    }
    let panels: Vec<Range<usize>> = (0..outputs)
        .step_by(PANEL_COLUMNS)
        .map(|c| c..(c + PANEL_COLUMNS).min(outputs))
        .collect();
    let results: Vec<Vec<f32>> = panels
        .par_iter()
        .map(|cols| {
            let mut panel = vec![0.0f32; rows * cols.len()];
            linear_columns(x, inputs, kernel, bias, cols.clone(), &mut panel);
            panel
        })
        .collect();
    for (cols, panel) in panels.iter().zip(&results) {
        for (out, part) in out.chunks_exact_mut(outputs).zip(panel.chunks_exact(cols.len())) {
            out[cols.clone()].copy_from_slice(part);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::gpt::tests::tiny_config;
    use crate::rng::Rng;

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

    /// Sequences of different lengths, some with a prompt block and some with one token,
    /// fed in one pass give each the bits it gets alone.
    #[test]
    fn a_batched_pass_gives_each_sequence_its_solo_logits() {
        let model = tiny();
        let prefixes: [&[u32]; 4] = [&[1, 2, 3], &[], &[4], &[5, 6, 7, 8, 9]];
        let feeds: [&[u32]; 4] = [&[4], &[10, 0, 3], &[6], &[1]];
        let mut solo = Vec::new();
        let mut caches = Vec::new();
        for (prefix, tokens) in prefixes.iter().zip(&feeds) {
            let mut cache = KvCache::new(&model);
            let mut logits = Vec::new();
            if !prefix.is_empty() {
                model.feed(&mut cache, prefix, &mut logits).unwrap();
            }
            caches.push(cache.clone());
            model.feed(&mut cache, tokens, &mut logits).unwrap();
            solo.push(logits);
        }
        let mut outputs = vec![Vec::new(); 4];
        let mut batch: Vec<Feed> = caches
            .iter_mut()
            .zip(&feeds)
            .zip(outputs.iter_mut())
            .map(|((cache, tokens), logits)| Feed {
                cache,
                tokens,
                logits,
            })
            .collect();
        model.feed_batch(&mut batch).unwrap();
        assert_eq!(outputs, solo);
        assert_eq!(caches[3].len(), 6);
    }

    /// The panel path for many rows computes every element as the streaming path does.
    #[test]
    fn the_panel_product_equals_the_streaming_one_bit_for_bit() {
        let mut rng = Rng::new(5);
        let (inputs, outputs, rows) = (37, 3 * PANEL_COLUMNS + 5, 11);
        let mut random = |n: usize| (0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<f32>>();
        let (x, kernel, bias) = (random(rows * inputs), random(inputs * outputs), random(outputs));
        let mut panels = vec![0.0; rows * outputs];
        linear_rows(&x, inputs, &kernel, &bias, &mut panels);
        let mut streamed = vec![0.0; rows * outputs];
        linear_columns(&x, inputs, &kernel, &bias, 0..outputs, &mut streamed);
        assert_eq!(panels, streamed);
        for (r, row) in panels.chunks_exact(outputs).enumerate() {
            let mut alone = vec![0.0; outputs];
            linear_rows(&x[r * inputs..][..inputs], inputs, &kernel, &bias, &mut alone);
            assert_eq!(row, &alone[..], "row {r}");
        }
    }

    #[test]
    fn a_feed_past_the_context_or_the_vocabulary_is_an_error() {
        let model = tiny();
        let mut cache = KvCache::new(&model);
        let mut logits = Vec::new();
        let err = model.feed(&mut cache, &[1; 7], &mut logits).unwrap_err();
        assert!(err.to_string().contains("context of 6"), "{err}");
        let err = model.feed(&mut cache, &[11], &mut logits).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
        assert!(model.feed(&mut cache, &[], &mut logits).is_err());
    }
}
