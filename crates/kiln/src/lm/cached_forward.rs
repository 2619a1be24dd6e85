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
use super::int8::{Int8Kernel, Int8Weights};
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
        self.feed_batch_with(feeds, None)
    }

    /// `feed_batch` reading the linear kernels from `kernels`: panels made from this
    /// model's weights (`DecodeKernels::panels`; the same results, read from memory in
    /// order where a pass has many rows), or the int8 weights of a quantized model.
    pub fn feed_batch_with(&self, feeds: &mut [Feed], kernels: Option<&DecodeKernels>) -> Result<()> {
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
            let kernels = kernels.map(|k| &k.blocks[layer]);
            self.block_rows(block, layer, &mut caches, &spans, kernels, &mut x);
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
        kernels: Option<&[PassKernel; 4]>,
        x: &mut [f32],
    ) {
        let c = &self.layout.config;
        let value = |id: ParamId| self.params.get(id).value.data();
        let (width, eps) = (c.width, c.layer_norm_epsilon);
        let rows = x.len() / width;
        let mut h = x.to_vec();
        norm_rows(&mut h, width, value(b.ln_1.0), value(b.ln_1.1), eps);
        let mut qkv = vec![0.0f32; rows * 3 * width];
        let linear = |(kernel, bias): (ParamId, ParamId), which: usize| {
            let pass = kernels.map(|k| &k[which]);
            Linear {
                kernel: value(kernel),
                bias: value(bias),
                panels: match pass {
                    Some(PassKernel::Panels(p)) => Some(&p[..]),
                    _ => None,
                },
                int8: match pass {
                    Some(PassKernel::Int8(q)) => Some(q),
                    _ => None,
                },
            }
        };
        linear_rows(&h, width, &linear(b.qkv, 0), &mut qkv);
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
        linear_rows(&attended, width, &linear(b.proj, 1), &mut projected);
        x.iter_mut().zip(&projected).for_each(|(x, a)| *x += a);
        h.copy_from_slice(x);
        norm_rows(&mut h, width, value(b.ln_2.0), value(b.ln_2.1), eps);
        let hidden = c.hidden();
        let mut f = vec![0.0f32; rows * hidden];
        linear_rows(&h, width, &linear(b.fc, 2), &mut f);
        let activation = c.activation.op();
        f.iter_mut().for_each(|v| *v = activation.f(*v));
        linear_rows(&f, hidden, &linear(b.fc_out, 3), &mut projected);
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

crate::kernels::simd::widest_simd! {
    /// Causal attention of one sequence's new rows (positions `start..`, their q|k|v rows
    /// in `qkv`) over every position its cache holds up to each row's own. The dot
    /// products keep eight partial sums whatever the instruction set, so the wider
    /// registers change no result.
    fn attend_rows(qkv: &[f32], cache: (&[f32], &[f32]), start: usize, width: usize, heads: usize, out: &mut [f32]) => attend_rows_with
}

#[inline(always)]
fn attend_rows_with(
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
    // Scores per head, each over every position; positions are the outer loop so that
    // each cached key and value row is read once, in order.
    let positions = start + rows;
    let mut p = vec![0.0f32; heads * positions];
    for (r, out) in out.chunks_exact_mut(width).enumerate() {
        let seen = start + r + 1;
        let q = &qkv[r * 3 * width..][..width];
        for (j, k) in keys.chunks_exact(width).take(seen).enumerate() {
            for ((q, k), p) in q
                .chunks_exact(head)
                .zip(k.chunks_exact(head))
                .zip(p.chunks_exact_mut(positions))
            {
                p[j] = dot(q, k) * scale;
            }
        }
        for p in p.chunks_exact_mut(positions) {
            softmax_in_place(&mut p[..seen]);
        }
        for (j, v) in values.chunks_exact(width).take(seen).enumerate() {
            for ((out, v), p) in out
                .chunks_exact_mut(head)
                .zip(v.chunks_exact(head))
                .zip(p.chunks_exact(positions))
            {
                axpy(out, p[j], v);
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
pub(crate) const ROWS_PER_STREAM: usize = 4;

/// Columns of a kernel panel that every row of a larger batch goes through before the
/// next panel: the panel (inputs × 64) stays in the core's L2 while the rows reuse it.
pub(crate) const PANEL_COLUMNS: usize = 64;

/// A linear layer's weights for the inference pass: the kernel (inputs × outputs), the
/// bias, and optionally the kernel packed panel by panel or in int8 (`DecodeKernels`).
pub(crate) struct Linear<'a> {
    kernel: &'a [f32],
    bias: &'a [f32],
    panels: Option<&'a [f32]>,
    int8: Option<&'a Int8Kernel>,
}

/// How a pass reads one linear layer's kernel.
pub(crate) enum PassKernel {
    /// The float kernel packed by `pack_panels`.
    Panels(Vec<f32>),
    /// int8 codes and scales (`super::int8`), in place of the float kernel.
    Int8(Int8Kernel),
}

/// `out = x · kernel + bias` row by row (x: rows × inputs). A batch of many rows goes
/// panel by panel, the panels shared among the threads, so the weights are read from
/// memory once per pass (and, packed, in order); each element's arithmetic is the same
/// either way (see `linear_columns`).
fn linear_rows(x: &[f32], inputs: usize, linear: &Linear, out: &mut [f32]) {
    let (rows, outputs) = (x.len() / inputs, linear.bias.len());
    if let Some(int8) = linear.int8 {
        super::int8::linear_rows(x, inputs, int8, linear.bias, out);
        return;
    }
    let (kernel, bias) = (linear.kernel, linear.bias);
    if rows <= ROWS_PER_STREAM || outputs < PANEL_COLUMNS {
        linear_columns(x, inputs, kernel, bias, 0..outputs, out);
        return;
    }
    by_panels(rows, outputs, out, |p, cols, panel| {
        if cols.len() < PANEL_COLUMNS {
            linear_columns(x, inputs, kernel, bias, cols, panel);
        } else if let Some(packed) = linear.panels {
            let weights = &packed[p * inputs * PANEL_COLUMNS..][..inputs * PANEL_COLUMNS];
            linear_panel(x, inputs, weights, PANEL_COLUMNS, linear, cols.start, panel);
        } else {
            let weights = &kernel[cols.start..];
            linear_panel(x, inputs, weights, outputs, linear, cols.start, panel);
        }
    });
}

/// Fills `out` (rows × outputs) panel by panel on the threads: `panel(index, columns,
/// buffer)` writes the columns' values of every row (rows × columns) into its buffer,
/// which is then copied into place.
pub(crate) fn by_panels(
    rows: usize,
    outputs: usize,
    out: &mut [f32],
    panel: impl Fn(usize, Range<usize>, &mut [f32]) + Sync,
) {
    let panels: Vec<Range<usize>> = (0..outputs)
        .step_by(PANEL_COLUMNS)
        .map(|c| c..(c + PANEL_COLUMNS).min(outputs))
        .collect();
    let results: Vec<Vec<f32>> = panels
        .par_iter()
        .enumerate()
        .map(|(p, cols)| {
            let mut buffer = vec![0.0f32; rows * cols.len()];
            panel(p, cols.clone(), &mut buffer);
            buffer
        })
        .collect();
    for (cols, buffer) in panels.iter().zip(&results) {
        for (out, part) in out.chunks_exact_mut(outputs).zip(buffer.chunks_exact(cols.len())) {
            out[cols.clone()].copy_from_slice(part);
        }
    }
}

/// A kernel's whole 64-column panels, each stored as its rows one after another, so that
/// a batched pass reads each panel in order (the kernel's own rows are a page or more
/// apart, which defeats the hardware prefetchers). Columns past the last whole panel are
/// read from the kernel.
fn pack_panels(kernel: &[f32], inputs: usize) -> Vec<f32> {
    let outputs = kernel.len() / inputs;
    let panels = outputs / PANEL_COLUMNS;
    let mut packed = Vec::with_capacity(panels * inputs * PANEL_COLUMNS);
    for p in 0..panels {
        for row in kernel.chunks_exact(outputs) {
            packed.extend_from_slice(&row[p * PANEL_COLUMNS..][..PANEL_COLUMNS]);
        }
    }
    packed
}

/// How a pass reads every block's linear kernels, made once per model: packed by
/// `pack_panels` for a server decoding many float sequences at once (a copy of the block
/// weights, valid only for the weights it was made from), or the int8 weights of a
/// quantized model, which every pass of that model must use.
pub struct DecodeKernels {
    /// Per block: q|k|v, attention projection, MLP in, MLP out.
    blocks: Vec<[PassKernel; 4]>,
}

impl DecodeKernels {
    /// `model`'s float kernels packed in panels.
    pub fn panels(model: &Gpt) -> DecodeKernels {
        let c = &model.layout.config;
        let value = |id: ParamId| model.params.get(id).value.data();
        let blocks = model
            .layout
            .blocks
            .iter()
            .map(|b| {
                [
                    (b.qkv.0, c.width),
                    (b.proj.0, c.width),
                    (b.fc.0, c.width),
                    (b.fc_out.0, c.hidden()),
                ]
                .map(|(kernel, inputs)| PassKernel::Panels(pack_panels(value(kernel), inputs)))
            })
            .collect();
        DecodeKernels { blocks }
    }

    /// A quantized model's int8 kernels.
    pub fn int8(weights: &Int8Weights) -> DecodeKernels {
        let blocks = weights
            .blocks
            .iter()
            .map(|kernels| kernels.clone().map(PassKernel::Int8))
            .collect();
        DecodeKernels { blocks }
    }
}

/// Rows of a register tile: 4 rows × 64 columns of sums (16 AVX-512 registers) stay in
/// registers over the whole input axis.
pub(crate) const TILE_ROWS: usize = 4;

crate::kernels::simd::widest_simd! {
    /// Columns `first..first + 64` of `x · kernel + bias` into `panel` (rows × 64), four
    /// rows at a time in registers; the rows left over go by `linear_columns`. The panel's
    /// weights for input k are `weights[k · stride..][..64]`: the kernel itself (`stride`
    /// its width, `weights` starting at column `first`) or its packed panel (stride 64).
    /// Each sum is the one `linear_columns` computes: the bias, then each product added in
    /// input order, multiply and add rounded separately.
    fn linear_panel(x: &[f32], inputs: usize, weights: &[f32], stride: usize, linear: &Linear, first: usize, panel: &mut [f32]) => linear_panel_with
}

#[inline(always)]
fn linear_panel_with(
    x: &[f32],
    inputs: usize,
    weights: &[f32],
    stride: usize,
    linear: &Linear,
    first: usize,
    panel: &mut [f32],
) {
    const N: usize = PANEL_COLUMNS;
    let start: &[f32; N] = linear.bias[first..first + N].try_into().expect("a whole panel");
    let tiles = x.len() / inputs / TILE_ROWS;
    for (x4, out4) in x
        .chunks_exact(TILE_ROWS * inputs)
        .zip(panel.chunks_exact_mut(TILE_ROWS * N))
        .take(tiles)
    {
        let mut sums = [*start; TILE_ROWS];
        for k in 0..inputs {
            let w: &[f32; N] = weights[k * stride..][..N].try_into().expect("a whole panel");
            for (r, sum) in sums.iter_mut().enumerate() {
                let v = x4[r * inputs + k];
                for (s, w) in sum.iter_mut().zip(w) {
                    *s += v * w;
                }
            }
        }
        for (out, sum) in out4.chunks_exact_mut(N).zip(&sums) {
            out.copy_from_slice(sum);
        }
    }
    let done = tiles * TILE_ROWS;
    linear_columns_with(
        &x[done * inputs..],
        inputs,
        linear.kernel,
        linear.bias,
        first..first + N,
        &mut panel[done * N..],
    );
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
        let panels = DecodeKernels::panels(&model);
        model.feed_batch_with(&mut batch, Some(&panels)).unwrap();
        assert_eq!(outputs, solo);
        assert_eq!(caches[3].len(), 6);
    }

    /// An int8 model's pass uses its codes (its logits are near the float ones, not equal),
    /// and a batch gives each sequence its solo logits there too.
    #[test]
    fn int8_kernels_are_used_and_batch_invariant() {
        let model = tiny();
        let int8 = DecodeKernels::int8(&Int8Weights::quantize(&model));
        let run = |kernels: Option<&DecodeKernels>, batch: &[&[u32]]| {
            let mut caches: Vec<KvCache> = batch.iter().map(|_| KvCache::new(&model)).collect();
            let mut outputs = vec![Vec::new(); batch.len()];
            let mut feeds: Vec<Feed> = caches
                .iter_mut()
                .zip(batch)
                .zip(outputs.iter_mut())
                .map(|((cache, tokens), logits)| Feed {
                    cache,
                    tokens,
                    logits,
                })
                .collect();
            model.feed_batch_with(&mut feeds, kernels).unwrap();
            outputs
        };
        let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4, 5], &[6, 7, 8, 9, 10]];
        let together = run(Some(&int8), &prompts);
        for (i, prompt) in prompts.iter().enumerate() {
            assert_eq!(run(Some(&int8), &[prompt])[0], together[i]);
            let float = &run(None, &[prompt])[0];
            assert_ne!(float, &together[i]);
            for (a, b) in float.iter().zip(&together[i]) {
                assert!((a - b).abs() < 0.05, "{a} vs {b}");
            }
        }
    }

    /// The panel path for many rows computes every element as the streaming path does.
    #[test]
    fn the_panel_product_equals_the_streaming_one_bit_for_bit() {
        let mut rng = Rng::new(5);
        let (inputs, outputs, rows) = (37, 3 * PANEL_COLUMNS + 5, 11);
        let mut random = |n: usize| (0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<f32>>();
        let (x, kernel, bias) = (random(rows * inputs), random(inputs * outputs), random(outputs));
        let packed = pack_panels(&kernel, inputs);
        let run = |packed: Option<&[f32]>, x: &[f32]| {
            let linear = Linear {
                kernel: &kernel,
                bias: &bias,
                panels: packed,
                int8: None,
            };
            let mut out = vec![0.0; x.len() / inputs * outputs];
            linear_rows(x, inputs, &linear, &mut out);
            out
        };
        let mut streamed = vec![0.0; rows * outputs];
        linear_columns(&x, inputs, &kernel, &bias, 0..outputs, &mut streamed);
        assert_eq!(run(None, &x), streamed);
        assert_eq!(run(Some(&packed), &x), streamed);
        for (r, row) in streamed.chunks_exact(outputs).enumerate() {
            assert_eq!(row, &run(None, &x[r * inputs..][..inputs])[..], "row {r}");
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
