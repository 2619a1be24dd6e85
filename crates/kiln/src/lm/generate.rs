//! Text generation: sampling, and a `Sequence` that holds one generation's window, key/value
//! cache and random stream, so that each new token costs one position's work
//! (`cached_forward`) instead of the whole context's. `decode_step` advances several
//! sequences by one token in one batched pass; `generate` is that loop for one sequence, so
//! a sequence decoded beside others draws exactly the tokens it draws alone.
//!
//! The uncached path recomputes the keys and values of the whole window for every token;
//! it gives bit-identical logits (see `cached_forward`) and therefore the same tokens.
//!
//! The window: a model with learned positions cannot slide its context one token at a
//! time and keep its cache (every position would shift). When the window is full, the
//! oldest half is dropped and the cache rebuilt from the rest, so each prediction sees at
//! least half a context of history. Both paths follow this rule.

pub use super::cached_forward::{DecodeKernels, Feed, KvCache};
use super::gpt::Gpt;
use crate::error::{Error, Result};
use crate::ops::softmax::softmax_in_place;
use crate::rng::Rng;

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

/// One generation in progress: the tokens in the model's window, their keys and values,
/// and the stream its tokens are drawn from.
#[derive(Debug, Clone)]
pub struct Sequence {
    window: Vec<u32>,
    cache: KvCache,
    logits: Vec<f32>,
    rng: Rng,
    sampling: Sampling,
    context: usize,
    use_cache: bool,
}

impl Sequence {
    /// A sequence that will continue `prompt`, checked as `check_request` checks it.
    pub fn new(model: &Gpt, prompt: &[u32], sampling: Sampling) -> Result<Sequence> {
        check_request(model, prompt, &sampling)?;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= model.vocab_size()) {
            return Err(Error::TokenOutOfRange {
                token: bad as usize,
                vocab: model.vocab_size(),
            });
        }
        Ok(Sequence {
            window: prompt.to_vec(),
            cache: KvCache::new(model),
            logits: Vec::new(),
            rng: Rng::new(sampling.seed),
            sampling,
            context: model.config().context,
            use_cache: true,
        })
    }

    /// The same sequence recomputing its whole window for every token (the reference the
    /// cached path must equal).
    pub fn without_cache(mut self) -> Sequence {
        self.use_cache = false;
        self
    }

    /// Whether the prompt is still to be fed (its first token not drawn yet).
    pub fn at_prompt(&self) -> bool {
        self.cache.is_empty()
    }

    /// Its share of the next pass: the tokens its cache does not hold yet.
    fn feed(&mut self) -> Feed<'_> {
        if !self.use_cache {
            self.cache.clear();
        }
        let fed = self.cache.len();
        Feed {
            cache: &mut self.cache,
            tokens: &self.window[fed..],
            logits: &mut self.logits,
        }
    }

    /// Draws the next token from the logits of the last pass and moves the window on.
    fn draw(&mut self) -> u32 {
        let next = self.sampling.draw(&self.logits, &mut self.rng);
        if self.window.len() == self.context {
            self.window.drain(..self.context - self.context / 2);
            self.cache.clear();
        }
        self.window.push(next);
        next
    }
}

/// Advances every sequence by one token in one pass over the model (a sequence's prompt
/// goes in that pass too) and returns each one's new token, in order. `kernels`: panels
/// made from this model (`DecodeKernels::panels`, which speed up passes of many rows and
/// change no result), or a quantized model's int8 weights (`DecodeKernels::int8`).
pub fn decode_step(
    model: &Gpt,
    kernels: Option<&DecodeKernels>,
    sequences: &mut [&mut Sequence],
) -> Result<Vec<u32>> {
    let mut feeds: Vec<Feed> = sequences.iter_mut().map(|s| s.feed()).collect();
    model.feed_batch_with(&mut feeds, kernels)?;
    drop(feeds);
    Ok(sequences.iter_mut().map(|s| s.draw()).collect())
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
    generate_with(model, None, prompt, count, sampling, use_cache, on_token)
}

/// `generate` reading the linear kernels from `kernels` (an int8 model's must be given).
pub fn generate_with(
    model: &Gpt,
    kernels: Option<&DecodeKernels>,
    prompt: &[u32],
    count: usize,
    sampling: &Sampling,
    use_cache: bool,
    on_token: &mut dyn FnMut(u32),
) -> Result<Vec<u32>> {
    let mut sequence = Sequence::new(model, prompt, sampling.clone())?;
    if !use_cache {
        sequence = sequence.without_cache();
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let next = decode_step(model, kernels, &mut [&mut sequence])?[0];
        on_token(next);
        out.push(next);
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

    /// Sequences decoded together, joining at different steps and with their own settings,
    /// draw exactly what each draws alone (the window of 6 is halved many times).
    #[test]
    fn sequences_decoded_in_one_batch_draw_their_solo_tokens() {
        let model = tiny();
        let setting = |seed: u64, temperature: f32| Sampling {
            temperature,
            top_k: Some(4),
            top_p: None,
            seed,
        };
        let requests: [(&[u32], Sampling, usize); 3] = [
            (&[1, 2], setting(1, 0.8), 0),
            (&[3, 4, 5, 6], setting(2, 0.0), 3),
            (&[7], setting(3, 1.3), 5),
        ];
        let count = 20;
        let solo: Vec<Vec<u32>> = requests
            .iter()
            .map(|(prompt, s, _)| generate(&model, prompt, count, s, true, &mut |_| {}).unwrap())
            .collect();
        let mut sequences: Vec<Sequence> = requests
            .iter()
            .map(|(prompt, s, _)| Sequence::new(&model, prompt, s.clone()).unwrap())
            .collect();
        let mut drawn = vec![Vec::new(); requests.len()];
        for step in 0..count + 5 {
            let active: Vec<usize> = (0..requests.len())
                .filter(|&i| step >= requests[i].2 && drawn[i].len() < count)
                .collect();
            let mut batch: Vec<&mut Sequence> = sequences
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| active.contains(i))
                .map(|(_, s)| s)
                .collect();
            if batch.is_empty() {
                continue;
            }
            let panels = DecodeKernels::panels(&model);
            for (&i, token) in active
                .iter()
                .zip(decode_step(&model, Some(&panels), &mut batch).unwrap())
            {
                drawn[i].push(token);
            }
        }
        assert_eq!(drawn, solo);
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
