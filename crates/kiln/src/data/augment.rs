//! Image augmentation on the fly, training batches only, with Keras's parameter meanings:
//! `random_rotation` (factor as a fraction of 2π, positive = counter-clockwise),
//! `random_flip`, `random_zoom` (positive = zoom out), `random_translation` (fractions of
//! the height and width). Each sample draws its own transform from (seed, epoch, sample
//! index), so a run is reproducible, resumable and independent of batching or ranks.
//!
//! Unlike Keras, which resamples once per layer, kiln composes a sample's transforms into
//! one affine map and resamples once: one interpolation (sharper), one pass (faster), with
//! one fill mode and interpolation for the whole list.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Stream label of the augmentation draws.
const AUGMENT_STREAM: u64 = 0x6b69_6c6e_4155_4700; // "kilnAUG"

/// A factor: `0.1` means the range [-0.1, 0.1], `[a, b]` the range [a, b].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Factor {
    Symmetric(f32),
    Range([f32; 2]),
}

impl Factor {
    fn bounds(self) -> [f32; 2] {
        match self {
            Factor::Symmetric(f) => [-f.abs(), f.abs()],
            Factor::Range(r) => r,
        }
    }

    fn draw(self, rng: &mut Rng) -> f32 {
        let [lo, hi] = self.bounds();
        lo + rng.next_f32() * (hi - lo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlipMode {
    Horizontal,
    Vertical,
    /// Keras's default: each axis flipped with probability ½.
    #[default]
    HorizontalAndVertical,
}

/// One augmentation, as a spec lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    RandomRotation {
        factor: Factor,
    },
    RandomFlip {
        #[serde(default)]
        mode: FlipMode,
    },
    RandomZoom {
        height_factor: Factor,
        /// Default: the height's zoom, keeping the aspect ratio.
        #[serde(default)]
        width_factor: Option<Factor>,
    },
    RandomTranslation {
        height_factor: Factor,
        width_factor: Factor,
    },
}

/// How a pixel that maps outside the image is filled (TensorFlow's fill modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillMode {
    /// `d c b a | a b c d | d c b a`: mirrored about the edge of the last pixel.
    #[default]
    Reflect,
    /// `k k k k | a b c d | k k k k` with k = `fill_value`.
    Constant,
    /// `a a a a | a b c d | d d d d`.
    Nearest,
    /// `a b c d | a b c d | a b c d`.
    Wrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    #[default]
    Bilinear,
    Nearest,
}

/// `[preprocessing.augmentation]`: the transforms and how to resample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    pub transforms: Vec<Transform>,
    #[serde(default)]
    pub fill_mode: FillMode,
    #[serde(default)]
    pub fill_value: f32,
    #[serde(default)]
    pub interpolation: Interpolation,
}

/// An affine map from output pixel (x, y) to input position: `[a, b, c, d, e, f]` gives
/// `(a·x + b·y + c, d·x + e·y + f)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Affine([f32; 6]);

impl Affine {
    const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// `self` after `inner`: the map of a layer applied after the one `self` maps for.
    fn then(self, inner: Affine) -> Affine {
        let [a, b, c, d, e, f] = self.0;
        let [p, q, r, s, t, u] = inner.0;
        Affine([
            a * p + b * s,
            a * q + b * t,
            a * r + b * u + c,
            d * p + e * s,
            d * q + e * t,
            d * r + e * u + f,
        ])
    }
}

impl Augmentation {
    /// Checks the factors and that samples are images: `[height, width]` or
    /// `[height, width, channels]` (channels last).
    pub fn check(&self, sample_shape: &[usize]) -> Result<()> {
        if !(2..=3).contains(&sample_shape.len()) {
            return Err(Error::shape(
                "augmentation",
                "images, shaped [height, width] or [height, width, channels]",
                format!("samples shaped {sample_shape:?}"),
            ));
        }
        for (i, t) in self.transforms.iter().enumerate() {
            let factors: Vec<Factor> = match t {
                Transform::RandomRotation { factor } => vec![*factor],
                Transform::RandomFlip { .. } => vec![],
                Transform::RandomZoom {
                    height_factor,
                    width_factor,
                } => std::iter::once(*height_factor).chain(*width_factor).collect(),
                Transform::RandomTranslation {
                    height_factor,
                    width_factor,
                } => vec![*height_factor, *width_factor],
            };
            for f in factors {
                let [lo, hi] = f.bounds();
                let zoom = matches!(t, Transform::RandomZoom { .. });
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) || (zoom && lo <= -1.0) {
                    return Err(Error::setting(
                        format!("preprocessing.augmentation.transforms[{i}] factor"),
                        format!("[{lo}, {hi}]"),
                        format!("a range low ≤ high{}", if zoom { ", above -1" } else { "" }),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Augments a batch in place: `x` holds `indices.len()` samples of `sample_shape`;
    /// `indices` are their positions in the training set, which with `seed` and `epoch`
    /// pick each sample's transform.
    pub fn apply(&self, x: &mut [f32], sample_shape: &[usize], indices: &[usize], seed: u64, epoch: usize) {
        let (height, width) = (sample_shape[0], sample_shape[1]);
        let channels = sample_shape.get(2).copied().unwrap_or(1);
        let size = height * width * channels;
        if size == 0 {
            return;
        }
        x.par_chunks_mut(size).zip(indices.par_iter()).for_each_init(
            || vec![0.0f32; size],
            |scratch, (sample, &index)| {
                let stream = AUGMENT_STREAM ^ ((epoch as u64) << 40) ^ index as u64;
                let map = self.draw(&mut Rng::derive(seed, stream), height, width);
                scratch.copy_from_slice(sample);
                self.resample(scratch, sample, map, height, width, channels);
            },
        );
    }

    /// One sample's composed map, output pixel → input position.
    fn draw(&self, rng: &mut Rng, height: usize, width: usize) -> Affine {
        let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
        self.transforms.iter().fold(Affine::IDENTITY, |map, t| {
            let step = match *t {
                Transform::RandomRotation { factor } => {
                    let angle = factor.draw(rng) * std::f32::consts::TAU;
                    let (sin, cos) = angle.sin_cos();
                    Affine([
                        cos,
                        -sin,
                        cx - cos * cx + sin * cy,
                        sin,
                        cos,
                        cy - sin * cx - cos * cy,
                    ])
                }
                Transform::RandomFlip { mode } => {
                    let h = mode != FlipMode::Vertical && rng.next_f32() < 0.5;
                    let v = mode != FlipMode::Horizontal && rng.next_f32() < 0.5;
                    let (sx, tx) = if h { (-1.0, 2.0 * cx) } else { (1.0, 0.0) };
                    let (sy, ty) = if v { (-1.0, 2.0 * cy) } else { (1.0, 0.0) };
                    Affine([sx, 0.0, tx, 0.0, sy, ty])
                }
                Transform::RandomZoom {
                    height_factor,
                    width_factor,
                } => {
                    let zy = 1.0 + height_factor.draw(rng);
                    let zx = width_factor.map_or(zy, |f| 1.0 + f.draw(rng));
                    Affine([zx, 0.0, cx * (1.0 - zx), 0.0, zy, cy * (1.0 - zy)])
                }
                Transform::RandomTranslation {
                    height_factor,
                    width_factor,
                } => {
                    let dy = height_factor.draw(rng) * height as f32;
                    let dx = width_factor.draw(rng) * width as f32;
                    Affine([1.0, 0.0, -dx, 0.0, 1.0, -dy])
                }
            };
            // Layers apply in order, so the input position of the last is looked up first.
            map.then(step)
        })
    }

    fn resample(
        &self,
        input: &[f32],
        output: &mut [f32],
        map: Affine,
        height: usize,
        width: usize,
        channels: usize,
    ) {
        let [a, b, c, d, e, f] = map.0;
        let (max_x, max_y) = ((width - 1) as f32, (height - 1) as f32);
        // Constant fill leaves coordinates as they are, so an interior position can be
        // read directly; other modes first fold the position back inside.
        let direct = self.fill_mode == FillMode::Constant && self.interpolation == Interpolation::Bilinear;
        for y in 0..height {
            let (row_x, row_y) = (b * y as f32 + c, e * y as f32 + f);
            for x in 0..width {
                let (ix, iy) = (a * x as f32 + row_x, d * x as f32 + row_y);
                let out = &mut output[(y * width + x) * channels..][..channels];
                // For non-negative positions truncation is floor, and much cheaper than a
                // floor call on CPUs targeted without SSE4.1.
                if direct && ix >= 0.0 && iy >= 0.0 && ix < max_x && iy < max_y {
                    let (x0, y0) = (ix as usize, iy as usize);
                    let (fx, fy) = (ix - x0 as f32, iy - y0 as f32);
                    let at = (y0 * width + x0) * channels;
                    let row = width * channels;
                    for (ch, o) in out.iter_mut().enumerate() {
                        let i = at + ch;
                        let top = input[i] + (input[i + channels] - input[i]) * fx;
                        let bottom = input[i + row] + (input[i + row + channels] - input[i + row]) * fx;
                        *o = top + (bottom - top) * fy;
                    }
                    continue;
                }
                if direct && (ix <= -1.0 || iy <= -1.0 || ix >= width as f32 || iy >= height as f32) {
                    out.fill(self.fill_value); // no neighbour inside
                    continue;
                }
                for (ch, o) in out.iter_mut().enumerate() {
                    *o = self.sample(input, ix, iy, ch, height, width, channels);
                }
            }
        }
    }

    /// The input's value at position (x, y), channel `c`.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        input: &[f32],
        x: f32,
        y: f32,
        c: usize,
        height: usize,
        width: usize,
        channels: usize,
    ) -> f32 {
        let (x, y) = (
            map_coordinate(x, width, self.fill_mode),
            map_coordinate(y, height, self.fill_mode),
        );
        let read = |row: f32, col: f32| -> f32 {
            let inside = row >= 0.0 && col >= 0.0 && row <= (height - 1) as f32 && col <= (width - 1) as f32;
            match (inside, self.fill_mode) {
                (true, _) => input[((row as usize) * width + col as usize) * channels + c],
                (false, FillMode::Constant) => self.fill_value,
                // Other modes mapped the position inside; a neighbour past the last pixel
                // is that pixel.
                (false, _) => {
                    let row = row.clamp(0.0, (height - 1) as f32) as usize;
                    let col = col.clamp(0.0, (width - 1) as f32) as usize;
                    input[(row * width + col) * channels + c]
                }
            }
        };
        match self.interpolation {
            Interpolation::Nearest => read(y.round(), x.round()),
            Interpolation::Bilinear => {
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let top = read(y0, x0) * (1.0 - fx) + read(y0, x0 + 1.0) * fx;
                let bottom = read(y0 + 1.0, x0) * (1.0 - fx) + read(y0 + 1.0, x0 + 1.0) * fx;
                top * (1.0 - fy) + bottom * fy
            }
        }
    }
}

/// A position along an axis of `len` pixels brought inside it as the fill mode says
/// (TensorFlow's `map_coord`); constant fill leaves it, its neighbours read the fill value.
fn map_coordinate(coord: f32, len: usize, mode: FillMode) -> f32 {
    let last = (len - 1) as f32;
    let n = len as f32;
    match mode {
        FillMode::Constant => coord,
        FillMode::Nearest => coord.clamp(0.0, last),
        FillMode::Wrap => coord.rem_euclid(n).min(last),
        FillMode::Reflect if len <= 1 => 0.0,
        FillMode::Reflect => {
            let period = 2.0 * n;
            let folded = coord.rem_euclid(period);
            let reflected = if folded >= n {
                period - folded - 1.0
            } else {
                folded
            };
            reflected.clamp(0.0, last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×3 image numbered row by row: 0 1 2 / 3 4 5 / 6 7 8.
    fn image() -> Vec<f32> {
        (0..9).map(|v| v as f32).collect()
    }

    fn augmentation(transforms: Vec<Transform>, fill_mode: FillMode) -> Augmentation {
        Augmentation {
            transforms,
            fill_mode,
            fill_value: -1.0,
            interpolation: Interpolation::Bilinear,
        }
    }

    fn run(a: &Augmentation, shape: &[usize], image: &[f32]) -> Vec<f32> {
        let mut x = image.to_vec();
        a.apply(&mut x, shape, &[0], 1, 0);
        x
    }

    #[test]
    fn a_quarter_turn_rotates_counter_clockwise_exactly() {
        let a = augmentation(
            vec![Transform::RandomRotation {
                factor: Factor::Range([0.25, 0.25]),
            }],
            FillMode::Constant,
        );
        // Counter-clockwise: the top-right corner (2) comes to the top-left.
        let got: Vec<f32> = run(&a, &[3, 3], &image()).iter().map(|v| v.round()).collect();
        assert_eq!(got, vec![2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]);
    }

    #[test]
    fn flips_mirror_the_axes_and_keep_channels() {
        let h = augmentation(
            vec![Transform::RandomFlip {
                mode: FlipMode::Horizontal,
            }],
            FillMode::Reflect,
        );
        // Find a sample index whose draw flips (probability ½), then check the mirror.
        let rgb: Vec<f32> = (0..18).map(|v| v as f32).collect(); // 3×3 with 2 channels
        let flipped = (0..16)
            .map(|i| {
                let mut x = rgb.clone();
                h.apply(&mut x, &[3, 3, 2], &[i], 1, 0);
                x
            })
            .find(|x| x != &rgb)
            .expect("some sample flips");
        let expected: Vec<f32> = (0..3)
            .flat_map(|row| {
                (0..3)
                    .rev()
                    .flat_map(move |col| [(row * 3 + col) * 2, (row * 3 + col) * 2 + 1])
            })
            .map(|v| v as f32)
            .collect();
        assert_eq!(flipped, expected);
        let v = augmentation(
            vec![Transform::RandomFlip {
                mode: FlipMode::Vertical,
            }],
            FillMode::Reflect,
        );
        let flipped = (0..16)
            .map(|i| {
                let mut x = image();
                v.apply(&mut x, &[3, 3], &[i], 1, 0);
                x
            })
            .find(|x| x != &image())
            .unwrap();
        assert_eq!(flipped, vec![6.0, 7.0, 8.0, 3.0, 4.0, 5.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn translation_shifts_and_fills_as_the_mode_says() {
        // One pixel right (width factor 1/3 of 3 pixels), none down.
        let shift = |mode| {
            augmentation(
                vec![Transform::RandomTranslation {
                    height_factor: Factor::Symmetric(0.0),
                    width_factor: Factor::Range([1.0 / 3.0, 1.0 / 3.0]),
                }],
                mode,
            )
        };
        let round = |v: Vec<f32>| v.iter().map(|x| (x * 1e4).round() / 1e4).collect::<Vec<_>>();
        assert_eq!(
            round(run(&shift(FillMode::Constant), &[3, 3], &image())),
            vec![-1.0, 0.0, 1.0, -1.0, 3.0, 4.0, -1.0, 6.0, 7.0]
        );
        assert_eq!(
            round(run(&shift(FillMode::Reflect), &[3, 3], &image())),
            vec![0.0, 0.0, 1.0, 3.0, 3.0, 4.0, 6.0, 6.0, 7.0]
        );
        assert_eq!(
            round(run(&shift(FillMode::Wrap), &[3, 3], &image())),
            vec![2.0, 0.0, 1.0, 5.0, 3.0, 4.0, 8.0, 6.0, 7.0]
        );
    }

    #[test]
    fn zooming_out_by_two_samples_twice_as_far_from_the_centre() {
        // 5×5 ramp: value = column. Zoom factor +1 → z = 2: output column x reads input
        // column 2 + 2(x − 2), i.e. −2, 0, 2, 4, 6 → constant fill outside.
        let ramp: Vec<f32> = (0..25).map(|i| (i % 5) as f32).collect();
        let a = augmentation(
            vec![Transform::RandomZoom {
                height_factor: Factor::Range([1.0, 1.0]),
                width_factor: None,
            }],
            FillMode::Constant,
        );
        let out = run(&a, &[5, 5], &ramp);
        assert_eq!(&out[10..15], &[-1.0, 0.0, 2.0, 4.0, -1.0]);
        // Bilinear between pixels: zoom in by half reads columns 1, 1.5, 2, 2.5, 3.
        let half = augmentation(
            vec![Transform::RandomZoom {
                height_factor: Factor::Range([-0.5, -0.5]),
                width_factor: None,
            }],
            FillMode::Constant,
        );
        assert_eq!(&run(&half, &[5, 5], &ramp)[10..15], &[1.0, 1.5, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn reflect_mirrors_about_the_last_pixel_edge() {
        let m = |c| map_coordinate(c, 4, FillMode::Reflect);
        assert_eq!(
            [m(-1.0), m(-2.0), m(4.0), m(5.0), m(8.0), m(1.5)],
            [0.0, 1.0, 3.0, 2.0, 0.0, 1.5]
        );
        assert_eq!(map_coordinate(-3.0, 4, FillMode::Nearest), 0.0);
        assert_eq!(map_coordinate(5.0, 4, FillMode::Wrap), 1.0);
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_sample_only() {
        let a = augmentation(
            vec![
                Transform::RandomRotation {
                    factor: Factor::Symmetric(0.1),
                },
                Transform::RandomZoom {
                    height_factor: Factor::Symmetric(0.2),
                    width_factor: None,
                },
            ],
            FillMode::Reflect,
        );
        let ramp: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let pair: Vec<f32> = ramp.iter().chain(&ramp).copied().collect();
        let mut batch = pair.clone();
        a.apply(&mut batch, &[8, 8], &[5, 9], 3, 2);
        let mut alone = ramp.clone();
        a.apply(&mut alone, &[8, 8], &[9], 3, 2);
        assert_eq!(
            &batch[64..],
            &alone[..],
            "a sample's draw does not depend on its batch"
        );
        let mut next_epoch = pair.clone();
        a.apply(&mut next_epoch, &[8, 8], &[5, 9], 3, 3);
        assert_ne!(next_epoch, batch);
    }

    #[test]
    fn checks_shapes_and_factors() {
        let a = augmentation(
            vec![Transform::RandomZoom {
                height_factor: Factor::Range([-1.5, 0.0]),
                width_factor: None,
            }],
            FillMode::Reflect,
        );
        assert!(a.check(&[8, 8]).unwrap_err().to_string().contains("above -1"));
        let ok = augmentation(
            vec![Transform::RandomFlip {
                mode: FlipMode::Horizontal,
            }],
            FillMode::Reflect,
        );
        let err = ok.check(&[64]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("shaped [64]"), "{err}");
        ok.check(&[28, 28, 1]).unwrap();
        let spec: Augmentation = toml::from_str(
            "transforms = [{ type = \"random_rotation\", factor = 0.1 }, { type = \"random_zoom\", height_factor = [-0.1, 0.2] }]\nfill_mode = \"constant\"",
        )
        .unwrap();
        assert_eq!(spec.transforms.len(), 2);
        assert!(
            toml::from_str::<Augmentation>("transforms = [{ type = \"random_rotation\", factr = 0.1 }]")
                .is_err()
        );
    }
}
